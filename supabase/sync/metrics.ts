/**
 * Prometheus metrics of the Supabase bridge and the projection sync. One registry per process (or
 * per test), never prom-client's global one.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export function createSyncMetrics(registry = new Registry()) {
  return {
    registry,
    bridgeApplied: new Counter({
      name: 'credana_supabase_bridge_users_applied_total',
      help: 'Users whose Supabase state (sign-up, card controls) was applied to the financial database and Redis.',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    bridgeLatency: new Histogram({
      name: 'credana_supabase_bridge_latency_seconds',
      help: 'From the Supabase commit (outbox row) to the change applied in the financial database and Redis.',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30],
      registers: [registry],
    }),
    bridgeErrors: new Counter({
      name: 'credana_supabase_bridge_errors_total',
      help: 'Bridge rounds that failed and will be retried.',
      registers: [registry],
    }),
    bridgeLeader: new Gauge({
      name: 'credana_supabase_bridge_leader',
      help: '1 while this process holds the single-instance lock of the bridge.',
      registers: [registry],
    }),
    syncLag: new Gauge({
      name: 'credana_supabase_sync_lag_seconds',
      help: 'Financial database time minus the projection cursor: how far the Supabase projection is behind.',
      registers: [registry],
    }),
    syncUsers: new Counter({
      name: 'credana_supabase_sync_users_total',
      help: 'Users recomputed from the financial database and written to the projection.',
      labelNames: ['mode'] as const,
      registers: [registry],
    }),
    syncRowsWritten: new Counter({
      name: 'credana_supabase_sync_rows_written_total',
      help: 'Projection rows inserted, changed or deleted (unchanged rows are not rewritten).',
      labelNames: ['table'] as const,
      registers: [registry],
    }),
    syncBatchSeconds: new Histogram({
      name: 'credana_supabase_sync_batch_seconds',
      help: 'Time to read, compute and write one projection batch.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [registry],
    }),
    syncErrors: new Counter({
      name: 'credana_supabase_sync_errors_total',
      help: 'Projection batches that failed and will be retried.',
      registers: [registry],
    }),
  };
}

export type SyncMetrics = ReturnType<typeof createSyncMetrics>;
