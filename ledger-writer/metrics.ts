/**
 * Prometheus metrics of the ledger writer, on a registry of its own (no global state): the process's
 * (shared/observability/metrics.ts, with default process metrics) or a bare one in tests.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export function createLedgerWriterMetrics(registry: Registry = new Registry()) {
  return {
    registry,
    lagMs: new Gauge({
      name: 'credana_ledger_lag_ms',
      help: 'Age of the oldest outbox entry not yet written to Postgres (0 when all are written)',
      registers: [registry],
    }),
    backlog: new Gauge({
      name: 'credana_ledger_backlog_entries',
      help: 'Outbox entries not yet written to Postgres, over all shards',
      registers: [registry],
    }),
    entriesWritten: new Counter({
      name: 'credana_ledger_entries_written_total',
      help: 'Outbox entries committed to Postgres and acknowledged (result: applied, or duplicate of one applied before)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    deadLettered: new Counter({
      name: 'credana_ledger_dead_lettered_total',
      help: 'Outbox entries moved to the dead-letter stream (problem: invalid; failed = money rejected every retry; archive = only the raw event failed, its money is written)',
      labelNames: ['problem'] as const,
      registers: [registry],
    }),
    deadLetters: new Gauge({
      name: 'credana_ledger_dead_letters',
      help: 'Entries in the dead-letter stream, not yet replayed (alert when above 0: Postgres lacks what Redis did)',
      registers: [registry],
    }),
    batchFailures: new Counter({
      name: 'credana_ledger_batch_failures_total',
      help: 'Failed batch transactions (kind: retryable = Postgres unreachable or a transient conflict; data = isolated)',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    groupsRecreated: new Counter({
      name: 'credana_ledger_consumer_groups_recreated_total',
      help: 'Times the outbox consumer group was found gone (NOGROUP: Redis lost its data) and created again (alert: follow the "Losing Redis" runbook)',
      registers: [registry],
    }),
    shardsOwned: new Gauge({
      name: 'credana_ledger_shards_owned',
      help: 'Outbox shards this writer owns (holds the lease and the fence of); summed over the writers it is the shard count',
      registers: [registry],
    }),
    shardsAcquired: new Counter({
      name: 'credana_ledger_shards_acquired_total',
      help: 'Outbox shards this writer took (from: new = never owned before; writer = another writer owned it last, a takeover; self = this writer again after its lease lapsed)',
      labelNames: ['from'] as const,
      registers: [registry],
    }),
    shardsLost: new Counter({
      name: 'credana_ledger_shards_lost_total',
      help: 'Outbox shards this writer stopped owning (reason: released to balance or on stop; lease_lost or lease_expired = not renewed in time; fenced = taken over under a batch)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    fencedBatches: new Counter({
      name: 'credana_ledger_fenced_batches_total',
      help: 'Transactions rolled back because a shard of theirs had been taken over by another writer (its entries are left to the new owner)',
      registers: [registry],
    }),
    entriesClaimed: new Counter({
      name: 'credana_ledger_entries_claimed_total',
      help: 'Pending entries claimed (XAUTOCLAIM) from a shard this writer took over, written before its new ones',
      registers: [registry],
    }),
    readsRedone: new Counter({
      name: 'credana_ledger_reads_redone_total',
      help: 'Shard reads whose connection closed while they were out (their delivery may follow a lost one): their entries are claimed again in order instead',
      registers: [registry],
    }),
    polls: new Counter({
      name: 'credana_ledger_polls_total',
      help: 'Reads of one shard (result: entries, or empty)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    batchDuration: new Histogram({
      name: 'credana_ledger_batch_duration_seconds',
      help: 'Time to apply one batch in Postgres (one transaction)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    merchantNamesUnsealed: new Gauge({
      name: 'credana_ledger_merchant_names_unsealed',
      help: 'Merchant names waiting in plaintext to be sealed (merchant_names_unsealed, counted up to 10,000; alert when it stays above 0: the writer holds no data key)',
      registers: [registry],
    }),
    batchSize: new Histogram({
      name: 'credana_ledger_batch_entries',
      help: 'Entries per applied batch',
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
      registers: [registry],
    }),
  };
}
export type LedgerWriterMetrics = ReturnType<typeof createLedgerWriterMetrics>;
