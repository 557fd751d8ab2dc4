/** Prometheus metrics of the reconciliation runs, on a registry of their own (no global state). */
import { Counter, Gauge, Registry } from 'prom-client';
import type { Sql } from '../shared/db/client.ts';

export function createReconcileMetrics(registry: Registry = new Registry()) {
  return {
    registry,
    runs: new Counter({
      name: 'credana_reconciliation_runs_total',
      help: 'Reconciliation runs by job and final status (ok, findings, failed, skipped)',
      labelNames: ['job', 'status'] as const,
      registers: [registry],
    }),
    findings: new Counter({
      name: 'credana_reconciliation_findings_total',
      help: 'Findings by job and kind',
      labelNames: ['job', 'kind'] as const,
      registers: [registry],
    }),
    repairs: new Counter({
      name: 'credana_reconciliation_repairs_total',
      help: 'Repairs made by job',
      labelNames: ['job'] as const,
      registers: [registry],
    }),
    alerts: new Counter({
      name: 'credana_reconciliation_alerts_total',
      help: 'Runs that crossed an alert threshold (e.g. cache drift above the limit)',
      labelNames: ['job'] as const,
      registers: [registry],
    }),
    lastFindings: new Gauge({
      name: 'credana_reconciliation_last_findings',
      help: 'Findings of the last finished run of each job',
      labelNames: ['job'] as const,
      registers: [registry],
    }),
    lastChecked: new Gauge({
      name: 'credana_reconciliation_last_checked',
      help: 'Items checked by the last finished run of each job',
      labelNames: ['job'] as const,
      registers: [registry],
    }),
    lastFinishedS: new Gauge({
      name: 'credana_reconciliation_last_finished_seconds',
      help: 'Unix time the last run of each job finished (alert when it grows old)',
      labelNames: ['job'] as const,
      registers: [registry],
    }),
    lastOk: new Gauge({
      name: 'credana_reconciliation_last_ok',
      help: '1 when the last finished run of each job found nothing, else 0',
      labelNames: ['job'] as const,
      registers: [registry],
    }),

    // Upkeep (reconciler/upkeep): set by the jobs that watch them; alerts in ops/prometheus/upkeep-rules.yml.
    cardEventsDefaultRows: new Gauge({
      name: 'credana_card_events_default_rows',
      help: 'Rows in card_events_default (anything but 0 means partition upkeep fell behind)',
      registers: [registry],
    }),
    cardEventsCoveredUntilS: new Gauge({
      name: 'credana_card_events_partitions_covered_until_seconds',
      help: 'Unix time up to which every month from the current one has its card_events partition',
      registers: [registry],
    }),
    summaryRefreshedS: new Gauge({
      name: 'credana_user_position_summary_refreshed_seconds',
      help: 'Unix time of the last successful refresh of user_position_summary',
      registers: [registry],
    }),
  };
}

export type ReconcileMetrics = ReturnType<typeof createReconcileMetrics>;

/**
 * Sets the last-run gauges from `reconciliation_runs`, so a freshly started process (the scheduler,
 * a metrics endpoint) exports what the runs table says rather than nothing.
 */
export async function loadLastRuns(sql: Sql, metrics: ReconcileMetrics): Promise<void> {
  const rows = await sql<{ job: string; status: string; checked: number; n: number; finished_s: number }[]>`
    select distinct on (job) job, status, checked, jsonb_array_length(findings) as n,
      extract(epoch from finished_at)::float8 as finished_s
    from reconciliation_runs where finished_at is not null and status <> 'running'
    order by job, id desc`;
  for (const row of rows) {
    metrics.lastFindings.set({ job: row.job }, row.n);
    metrics.lastChecked.set({ job: row.job }, row.checked);
    metrics.lastFinishedS.set({ job: row.job }, row.finished_s);
    metrics.lastOk.set({ job: row.job }, row.status === 'ok' ? 1 : 0);
  }
}
