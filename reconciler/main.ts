/**
 * `npm run reconcile -- <job> [options]` — runs one scheduled job by hand, recorded like a
 * scheduled run. Jobs: cache, holds, books, chain, stripe, analytics, and upkeep: partitions, summary,
 * hold-sweep. Exit status: 0 ok, 1 findings,
 * 2 failed, 3 skipped (another run holds the job's lock), 64 usage.
 *
 *   --dry-run                    report only (cache, holds)
 *   --transactions <file>        Stripe Issuing transactions export, JSON list or CSV (stripe: reconcile
 *                                this file instead of reading Stripe's API with STRIPE_SECRET_KEY)
 *   --authorizations <file>      Stripe Issuing authorizations export (holds: release what Stripe closed;
 *                                stripe on an export: authorization findings)
 *   --from YYYY-MM-DD --to YYYY-MM-DD   period of the stripe job, UTC, `to` exclusive (default: yesterday
 *                                on an export; from the API, every day since the last one reconciled)
 */
import { parseArgs } from 'node:util';
import { configFromProcess } from '../shared/config.ts';
import { createReconcileServices, isRunnable, type JobArgs, RUNNABLE, runJob } from './index.ts';

function usage(message: string): never {
  process.stderr.write(
    `${message}\nusage: npm run reconcile -- <${RUNNABLE.join('|')}> [--dry-run] [--transactions f] [--authorizations f] [--from d --to d]\n`,
  );
  process.exit(64);
}

const dayS = (text: string, flag: string) => {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) usage(`${flag} must be YYYY-MM-DD`);
  return Date.parse(`${text}T00:00:00Z`) / 1000;
};

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'dry-run': { type: 'boolean' },
    transactions: { type: 'string' },
    authorizations: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
  },
});
const job = positionals[0];
if (job === undefined || !isRunnable(job)) usage(`unknown job ${JSON.stringify(job ?? '')}`);
if ((values.from === undefined) !== (values.to === undefined)) usage('--from and --to go together');

const args: JobArgs = {
  ...(values['dry-run'] === true ? { dryRun: true } : {}),
  ...(values.transactions === undefined ? {} : { transactionsFile: values.transactions }),
  ...(values.authorizations === undefined ? {} : { authorizationsFile: values.authorizations }),
  ...(values.from === undefined || values.to === undefined
    ? {}
    : { fromS: dayS(values.from, '--from'), toS: dayS(values.to, '--to') }),
};

const services = createReconcileServices(configFromProcess());
try {
  const result = await runJob(job, services, args);
  process.stdout.write(
    `${JSON.stringify({ ...result, findings: result.findings.slice(0, 50), findingsTotal: result.findings.length }, null, 2)}\n`,
  );
  process.exitCode = { ok: 0, findings: 1, failed: 2, skipped: 3 }[result.status];
} finally {
  await services.close();
}
