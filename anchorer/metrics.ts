/** The audit anchorer's Prometheus metrics, on a registry the caller owns (tests make their own). */
import { Counter, Gauge, Registry } from 'prom-client';

export interface AnchorMetrics {
  registry: Registry;
  /** 1 while the chain's base fee is above CHAIN_MAX_FEE_PER_GAS_GWEI and nothing is sent. */
  feeAboveCap: Gauge;
  feeCapWaits: Counter;
  /** Rounds by outcome (empty, unchanged, pending, fee_capped, anchored). */
  rounds: Counter<'status'>;
  /** The audit row id of the last anchor this process saw mined. */
  anchoredSequence: Gauge;
}

export function createAnchorMetrics(registry: Registry = new Registry()): AnchorMetrics {
  return {
    registry,
    feeAboveCap: new Gauge({
      name: 'audit_anchor_fee_above_cap',
      help: '1 while the base fee is above the configured max fee per gas and no anchor is sent',
      registers: [registry],
    }),
    feeCapWaits: new Counter({
      name: 'audit_anchor_fee_cap_waits_total',
      help: 'Anchor rounds skipped because the base fee was above the configured max fee per gas',
      registers: [registry],
    }),
    rounds: new Counter({
      name: 'audit_anchor_rounds_total',
      help: 'Anchor rounds by outcome',
      labelNames: ['status'],
      registers: [registry],
    }),
    anchoredSequence: new Gauge({
      name: 'audit_anchor_sequence',
      help: 'The audit_log id of the last anchor this process saw mined',
      registers: [registry],
    }),
  };
}
