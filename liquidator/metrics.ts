/** The liquidator's metrics (its internal listener, LIQUIDATOR_METRICS_PORT). */
import { Counter, Gauge, Registry } from 'prom-client';

export interface LiquidatorMetrics {
  registry: Registry;
  liquidations: Counter;
  confirmed: Counter;
  orphaned: Counter;
  unhealthy: Gauge;
  warnings: Gauge;
  staleSkipped: Counter;
  feeAboveCap: Gauge;
  feeCapWaits: Counter;
}

export function createLiquidatorMetrics(registry: Registry = new Registry()): LiquidatorMetrics {
  return {
    registry,
    liquidations: new Counter({
      name: 'liquidator_liquidations_sent_total',
      help: 'Liquidations broadcast',
      registers: [registry],
    }),
    confirmed: new Counter({
      name: 'liquidator_liquidations_confirmed_total',
      help: 'Liquidations whose successful receipt is CHAIN_CONFIRMATIONS deep (once per liquidations row)',
      registers: [registry],
    }),
    orphaned: new Counter({
      name: 'liquidator_liquidations_orphaned_total',
      help: 'Mined liquidations whose block a reorg dropped (followed again, or failed when gone)',
      registers: [registry],
    }),
    unhealthy: new Gauge({
      name: 'liquidator_unhealthy_accounts',
      help: 'Accounts below a health factor of 1 at the last scan',
      registers: [registry],
    }),
    warnings: new Gauge({
      name: 'liquidator_health_warning_accounts',
      help: 'Accounts below the health-factor warning line (HEALTH_FACTOR_WARNING_BPS), not yet below 1, at the last scan',
      registers: [registry],
    }),
    staleSkipped: new Counter({
      name: 'liquidator_stale_price_skips_total',
      help: 'Accounts not judged because a held asset had a stale price',
      registers: [registry],
    }),
    feeAboveCap: new Gauge({
      name: 'liquidator_fee_above_cap',
      help: '1 while the base fee is above the configured max fee per gas and nothing is sent',
      registers: [registry],
    }),
    feeCapWaits: new Counter({
      name: 'liquidator_fee_cap_waits_total',
      help: 'Liquidations held back because the base fee was above the cap',
      registers: [registry],
    }),
  };
}
