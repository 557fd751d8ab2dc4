/** The settlement worker's Prometheus metrics, on a registry the caller owns (tests make their own). */
import { Counter, Gauge, Registry } from 'prom-client';

export interface SettlementMetrics {
  registry: Registry;
  /** 1 while the chain's base fee is above CHAIN_MAX_FEE_PER_GAS_GWEI and the worker waits. */
  feeAboveCap: Gauge;
  feeCapWaits: Counter;
  /** Captures of users without a linked wallet, booked to the receivable account. */
  receivables: Counter;
  receivableCents: Counter;
  batchesSent: Counter;
}

export function createSettlementMetrics(registry: Registry = new Registry()): SettlementMetrics {
  return {
    registry,
    feeAboveCap: new Gauge({
      name: 'settlement_fee_above_cap',
      help: '1 while the base fee is above the configured max fee per gas and nothing is sent',
      registers: [registry],
    }),
    feeCapWaits: new Counter({
      name: 'settlement_fee_cap_waits_total',
      help: 'Send rounds skipped because the base fee was above the configured max fee per gas',
      registers: [registry],
    }),
    receivables: new Counter({
      name: 'settlement_receivables_total',
      help: 'Captures of users without a linked wallet, booked to user_receivable_unlinked (alert)',
      registers: [registry],
    }),
    receivableCents: new Counter({
      name: 'settlement_receivable_cents_total',
      help: 'Cents of captures booked to user_receivable_unlinked',
      registers: [registry],
    }),
    batchesSent: new Counter({
      name: 'settlement_batches_sent_total',
      help: 'Transactions broadcast, by kind',
      labelNames: ['kind'],
      registers: [registry],
    }),
  };
}
