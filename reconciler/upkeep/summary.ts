/**
 * Job `summary`: `REFRESH MATERIALIZED VIEW CONCURRENTLY user_position_summary` through
 * `refresh_user_position_summary()` (SECURITY DEFINER: on PostgreSQL 15 only the owner may refresh,
 * and the scheduler runs as credana_reconciliation). Concurrently: readers (support, dashboards) keep
 * reading the previous contents while it runs. Every 10 minutes, so the view is never more than one
 * period plus one refresh old; `credana_user_position_summary_refreshed_seconds` says when it last was.
 */
import type { ReconcileMetrics } from '../metrics.ts';
import type { JobContext, JobOutcome } from '../types.ts';

export function summaryJob(options: { metrics?: ReconcileMetrics } = {}) {
  return async (ctx: JobContext): Promise<JobOutcome> => {
    await ctx.sql`select refresh_user_position_summary()`;
    const [row] = await ctx.sql<{ n: number }[]>`select count(*)::int as n from user_position_summary`;
    options.metrics?.summaryRefreshedS.set(ctx.now() / 1000);
    return { checked: row?.n ?? 0, findings: [], repairs: 0, cursor: null };
  };
}
