/** The indexer's Prometheus metrics, on a registry the caller owns (tests make their own). */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface IndexerMetrics {
  registry: Registry;
  eventsStored: Counter;
  eventsApplied: Counter;
  eventsUndone: Counter;
  reorgs: Histogram;
  halts: Counter;
  oracleRoundsHeld: Counter;
  stepFailures: Counter;
  cursorBlock: Gauge;
  headBlock: Gauge;
}

export function createIndexerMetrics(registry: Registry = new Registry()): IndexerMetrics {
  return {
    registry,
    eventsStored: new Counter({
      name: 'indexer_events_stored_total',
      help: 'Chain logs stored',
      registers: [registry],
    }),
    eventsApplied: new Counter({
      name: 'indexer_events_applied_total',
      help: 'Chain logs whose effect was applied',
      registers: [registry],
    }),
    eventsUndone: new Counter({
      name: 'indexer_events_undone_total',
      help: 'Applied chain logs undone by reorgs',
      registers: [registry],
    }),
    reorgs: new Histogram({
      name: 'indexer_reorg_depth_blocks',
      help: 'Depth of each reorg followed',
      buckets: [1, 2, 3, 5, 8, 13, 21, 34, 64, 128],
      registers: [registry],
    }),
    halts: new Counter({
      name: 'indexer_halts_total',
      help: 'Times the indexer stopped on a condition it must not guess about (e.g. a reorg too deep)',
      labelNames: ['code'],
      registers: [registry],
    }),
    oracleRoundsHeld: new Counter({
      name: 'indexer_oracle_rounds_held_total',
      help: 'Oracle rounds held back by the sanity rules (out_of_bounds, future, spike); docs/chain.md "Oracle sanity"',
      labelNames: ['asset', 'reason'],
      registers: [registry],
    }),
    stepFailures: new Counter({
      name: 'indexer_step_failures_total',
      help: 'Steps that failed and were retried',
      labelNames: ['code'],
      registers: [registry],
    }),
    cursorBlock: new Gauge({
      name: 'indexer_cursor_block',
      help: 'Last block committed',
      registers: [registry],
    }),
    headBlock: new Gauge({ name: 'indexer_head_block', help: 'Chain head last seen', registers: [registry] }),
  };
}
