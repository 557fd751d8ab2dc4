/**
 * Runs one job and records it in `reconciliation_runs`: a row is inserted as `running`, checkpointed
 * with the job's cursor as it goes, and finished with its status, findings and repairs.
 *
 * One run per job at a time: the runner holds a session advisory lock on a reserved connection for
 * the whole run, so a second scheduler (or a hand-run `npm run reconcile`) skips instead of racing.
 * It therefore needs a session: a direct or session-pooled URL (a transaction-pooled one is refused).
 * A row left `running` by a crashed process is marked `failed` by the next run that gets the lock,
 * and its checkpointed cursor is where that run resumes.
 */

import { isTransactionPooled, type Sql } from '../shared/db/client.ts';
import type { Logger } from '../shared/observability/logger.ts';
import { limits } from './limits.ts';
import type { ReconcileMetrics } from './metrics.ts';
import type { Finding, JobContext, JobOutcome } from './types.ts';

/** First key of the two-int advisory lock; the second is hashtext(job). */
const LOCK_SPACE = 7_431_100;

export type RunStatus = 'ok' | 'findings' | 'failed' | 'skipped';

export interface RunResult {
  runId: string | null;
  job: string;
  status: RunStatus;
  checked: number;
  findings: Finding[];
  repairs: number;
  cursor: string | null;
  alert?: string;
}

export interface RunnerDeps {
  sql: Sql;
  metrics?: ReconcileMetrics;
  logger?: Logger;
  now?: () => number;
}

export type JobFunction = (ctx: JobContext) => Promise<JobOutcome>;

/** Findings as stored: at most limits.findingsStoredMax, then one item counting the rest. */
export function storedFindings(
  findings: readonly Finding[],
  max: number = limits.findingsStoredMax,
): Finding[] {
  if (findings.length <= max) return [...findings];
  return [...findings.slice(0, max), { kind: 'truncated', omitted: findings.length - max }];
}

function json(value: unknown) {
  return JSON.parse(
    JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)),
  ) as never;
}

/** The cursor a new run of `job` starts from: the last run's, when that run stopped mid-pass. */
export async function resumeCursor(sql: Sql, job: string): Promise<string | null> {
  const [last] = await sql<{ cursor: string | null }[]>`
    select cursor from reconciliation_runs where job = ${job} order by id desc limit 1`;
  return last?.cursor ?? null;
}

export async function runRecorded(deps: RunnerDeps, job: string, fn: JobFunction): Promise<RunResult> {
  const { sql, metrics, logger } = deps;
  const now = deps.now ?? Date.now;
  // Behind a transaction pooler the run's lock would stay on a pooled server connection after the run
  // (and its unlock could run on another one): a second run borrowing that connection would take the
  // lock again, re-entrantly, and both would run.
  if (isTransactionPooled(sql)) {
    throw new Error(
      'reconciliation runs take a session advisory lock: DATABASE_URL must be direct or session-pooled, not ?pgbouncer=transaction',
    );
  }
  const reserved = await sql.reserve();
  try {
    const [lock] = await reserved<{ ok: boolean }[]>`
      select pg_try_advisory_lock(${LOCK_SPACE}, hashtext(${job})) as ok`;
    if (lock?.ok !== true) {
      metrics?.runs.inc({ job, status: 'skipped' });
      logger?.info({ job }, 'reconcile: another run of this job holds the lock; skipped');
      return { runId: null, job, status: 'skipped', checked: 0, findings: [], repairs: 0, cursor: null };
    }
    try {
      // We hold the lock, so a row still `running` belongs to a process that died.
      await sql`update reconciliation_runs set status = 'failed', finished_at = now(),
          findings = findings || ${json([{ kind: 'run_abandoned' }])}::jsonb
        where job = ${job} and status = 'running'`;
      const cursor = await resumeCursor(sql, job);
      const [row] = await sql<{ id: string }[]>`
        insert into reconciliation_runs (job, status, cursor) values (${job}, 'running', ${cursor}) returning id`;
      const runId = row!.id;
      const ctx: JobContext = {
        sql,
        cursor,
        now,
        async checkpoint(progress) {
          await sql`update reconciliation_runs set cursor = ${progress.cursor}, checked = ${progress.checked}
            where id = ${runId}`;
        },
      };
      let outcome: JobOutcome;
      try {
        outcome = await fn(ctx);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        logger?.error({ job, err: message }, 'reconcile: run failed');
        // The cursor is left as the last checkpoint wrote it, so the next run resumes there.
        await sql`update reconciliation_runs set status = 'failed', finished_at = now(),
            findings = ${json([{ kind: 'run_failed', message: message.slice(0, 1_000) }])}::jsonb
          where id = ${runId}`;
        metrics?.runs.inc({ job, status: 'failed' });
        metrics?.lastOk.set({ job }, 0);
        metrics?.lastFinishedS.set({ job }, now() / 1000);
        return {
          runId,
          job,
          status: 'failed',
          checked: 0,
          findings: [{ kind: 'run_failed', message: message.slice(0, 1_000) }],
          repairs: 0,
          cursor,
        };
      }
      const status: RunStatus = outcome.findings.length === 0 ? 'ok' : 'findings';
      const stored = storedFindings(outcome.findings);
      if (outcome.alert !== undefined) stored.unshift({ kind: 'alert', message: outcome.alert });
      await sql`update reconciliation_runs set status = ${status}, finished_at = now(), checked = ${outcome.checked},
          findings = ${json(stored)}::jsonb, repairs = ${outcome.repairs}, cursor = ${outcome.cursor}
        where id = ${runId}`;
      if (metrics !== undefined) {
        metrics.runs.inc({ job, status });
        for (const finding of outcome.findings) metrics.findings.inc({ job, kind: finding.kind });
        metrics.repairs.inc({ job }, outcome.repairs);
        if (outcome.alert !== undefined) metrics.alerts.inc({ job });
        metrics.lastFindings.set({ job }, outcome.findings.length);
        metrics.lastChecked.set({ job }, outcome.checked);
        metrics.lastFinishedS.set({ job }, now() / 1000);
        metrics.lastOk.set({ job }, status === 'ok' ? 1 : 0);
      }
      if (outcome.alert !== undefined) logger?.error({ job, alert: outcome.alert }, 'reconcile: alert');
      logger?.info(
        {
          job,
          status,
          checked: outcome.checked,
          findings: outcome.findings.length,
          repairs: outcome.repairs,
        },
        'reconcile: run finished',
      );
      return {
        runId,
        job,
        status,
        checked: outcome.checked,
        findings: outcome.findings,
        repairs: outcome.repairs,
        cursor: outcome.cursor,
        ...(outcome.alert === undefined ? {} : { alert: outcome.alert }),
      };
    } finally {
      await reserved`select pg_advisory_unlock(${LOCK_SPACE}, hashtext(${job}))`;
    }
  } finally {
    reserved.release();
  }
}
