/**
 * `npm run ops -- reconcile <job> --reason "..."` — runs one reconciliation job (reconciler) by
 * hand, recorded in `reconciliation_runs` like a scheduled run, and audited: a run can repair (the
 * cache and holds jobs do), so who and why go to the audit log (`ops.reconcile_run`) before it starts.
 * `--dry-run` (cache, holds) only reports, and needs no reason.
 *
 * Exit status: 0 the job ran (ok or with findings, which are printed), 1 it failed or another run of
 * the job holds its lock (skipped), 2 bad input.
 */
import { existsSync } from 'node:fs';
import type { JobArgs, ReconcileServices } from '../../reconciler/index.ts';
import { RUNNABLE, type Runnable } from '../../reconciler/types.ts';
import { insertAudit } from '../../shared/db/queries/ledger.ts';
import { BadInput, guarded, parseStrict, reasonAndActor } from './args.ts';
import type { OpsCommand } from './command.ts';

export interface ReconcileContext {
  services(): Promise<ReconcileServices>;
  defaultActor?: string;
}

export const FINDINGS_PRINTED_MAX = 50;

const DRY_RUN_JOBS = new Set(['cache', 'holds']);

// From the light types module, so `npm run ops -- help` does not load every job (viem, the analytics
// store…) before it prints.
export const JOBS: readonly Runnable[] = RUNNABLE;
const isJob = (name: string): name is Runnable => (JOBS as readonly string[]).includes(name);

function day(text: string, flag: string): number {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text) || Number.isNaN(Date.parse(`${text}T00:00:00Z`)))
    throw new BadInput(`${flag} must be a date YYYY-MM-DD`);
  return Date.parse(`${text}T00:00:00Z`) / 1000;
}

function file(path: string, flag: string): string {
  if (!existsSync(path)) throw new BadInput(`${flag}: no file ${JSON.stringify(path)}`);
  return path;
}

export function reconcileCommand(context: ReconcileContext): OpsCommand {
  const usage = `npm run ops -- reconcile <${JOBS.join('|')}> --reason "..." [--actor name] [--dry-run] [--transactions file] [--authorizations file] [--from YYYY-MM-DD --to YYYY-MM-DD]`;
  return {
    name: 'reconcile',
    summary: 'Run one reconciliation job now (recorded and audited; --dry-run reports without repairing)',
    usage,
    mutating: true,
    run: (args, io) =>
      guarded(io, 'reconcile', usage, async () => {
        const { values, positionals } = parseStrict(args, {
          reason: { type: 'string' },
          actor: { type: 'string' },
          'dry-run': { type: 'boolean' },
          transactions: { type: 'string' },
          authorizations: { type: 'string' },
          from: { type: 'string' },
          to: { type: 'string' },
        });
        if (positionals.length !== 1)
          throw new BadInput(`expects one job, got ${positionals.length} argument(s)`);
        const job = positionals[0] as string;
        if (!isJob(job))
          throw new BadInput(`no job ${JSON.stringify(job.slice(0, 40))} (jobs: ${JOBS.join(', ')})`);
        const dryRun = values['dry-run'] === true;
        if (dryRun && !DRY_RUN_JOBS.has(job)) throw new BadInput(`--dry-run applies to cache and holds only`);
        if (values['transactions'] !== undefined && job !== 'stripe')
          throw new BadInput('--transactions applies to the stripe job only');
        if (values['authorizations'] !== undefined && job !== 'holds')
          throw new BadInput('--authorizations applies to the holds job only');
        if ((values['from'] === undefined) !== (values['to'] === undefined))
          throw new BadInput('--from and --to go together');
        if (values['from'] !== undefined && job !== 'stripe')
          throw new BadInput('--from/--to apply to the stripe job only');
        // Without --transactions the stripe job reads its period from Stripe's API (STRIPE_SECRET_KEY;
        // without the key it fails with one line saying so).
        const jobArgs: JobArgs = {
          ...(dryRun ? { dryRun: true } : {}),
          ...(typeof values['transactions'] === 'string'
            ? { transactionsFile: file(values['transactions'], '--transactions') }
            : {}),
          ...(typeof values['authorizations'] === 'string'
            ? { authorizationsFile: file(values['authorizations'], '--authorizations') }
            : {}),
        };
        if (typeof values['from'] === 'string' && typeof values['to'] === 'string') {
          jobArgs.fromS = day(values['from'], '--from');
          jobArgs.toS = day(values['to'], '--to');
          if (jobArgs.toS <= jobArgs.fromS) throw new BadInput('--to must be after --from');
        }
        // A dry run changes nothing; any other run may repair, so it needs a reason like every mutation.
        const by =
          dryRun && values['reason'] === undefined ? null : reasonAndActor(values, context.defaultActor);

        const services = await context.services();
        if (by !== null) {
          await services.database.sql.begin((tx) =>
            insertAudit(tx, [
              {
                actor: by.actor,
                action: 'ops.reconcile_run',
                entityType: 'reconciliation_job',
                entityId: job,
                data: {
                  reason: by.reason,
                  dryRun,
                  ...(jobArgs.fromS === undefined ? {} : { fromS: jobArgs.fromS, toS: jobArgs.toS }),
                },
              },
            ]),
          );
        }
        const { runJob } = await import('../../reconciler/index.ts');
        const result = await runJob(job, services, jobArgs);
        io.out(
          `reconcile ${job}${dryRun ? ' (dry run)' : ''}: ${result.status}${result.runId === null ? '' : ` (run ${result.runId})`}; checked ${result.checked}, findings ${result.findings.length}, repairs ${result.repairs}${result.cursor === null ? '' : '; the pass continues next run'}`,
        );
        if (result.alert !== undefined) io.out(`alert: ${result.alert}`);
        for (const finding of result.findings.slice(0, FINDINGS_PRINTED_MAX))
          io.out(`  ${JSON.stringify(finding)}`);
        if (result.findings.length > FINDINGS_PRINTED_MAX)
          io.out(`  … ${result.findings.length - FINDINGS_PRINTED_MAX} more in reconciliation_runs`);
        if (result.status === 'skipped') {
          io.err('reconcile: another run of this job holds its lock; nothing was done');
          return 1;
        }
        return result.status === 'failed' ? 1 : 0;
      }),
  };
}
