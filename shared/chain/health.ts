/**
 * Readiness of the chain services (indexer, settlement worker, liquidator, withdrawal approvals) and
 * their gauges: what each needs to do its job, asked at each /readyz and each scrape.
 *
 * - All of them need Postgres and the chain's RPC node (`eth_blockNumber`, straight to the node: no
 *   client-side cache can answer for it).
 * - The indexer and the withdrawal service also need Redis (cached positions, pending withdrawals).
 * - The settlement worker and the liquidator must run once per chain: they are ready only while they
 *   hold their chain's session lock (locked-loop.ts), exported as `credana_session_lock_held`. A
 *   standby that finds the lock taken exits (its supervisor restarts it), so it is never ready.
 */
import { Gauge, type Registry } from 'prom-client';
import type { PublicClient } from 'viem';
import type { Sql } from '../db/client.ts';
import { createProbes, type Readiness, singleFlight } from '../observability/health.ts';
import { createInternalApp, serveInternal } from '../observability/internal-app.ts';
import type { Logger } from '../observability/logger.ts';
import type { Redis } from '../redis/client.ts';

export interface ChainServiceHealthOptions {
  registry: Registry;
  sql: Sql;
  client: Pick<PublicClient, 'request'>;
  /** Checked too when given (indexer, withdrawals). */
  redis?: Redis;
  /** Required for readiness when given (settlement, liquidator): LockStatus.held of the worker. */
  lockHeld?: () => Promise<boolean>;
}

export function chainServiceReadiness(options: ChainServiceHealthOptions): Readiness {
  const checks: Record<string, () => Promise<unknown>> = {
    postgres: () => options.sql`select 1`.execute(),
    chain: () => options.client.request({ method: 'eth_blockNumber' }),
  };
  if (options.redis !== undefined) {
    const redis = options.redis;
    checks['redis'] = () => redis.ping();
  }
  const probe = createProbes(options.registry, checks);
  const lockHeld = options.lockHeld === undefined ? null : singleFlight(options.lockHeld);
  if (lockHeld !== null) {
    const gauge: Gauge = new Gauge({
      name: 'credana_session_lock_held',
      help: "1 while this process holds its chain's session lock (one settlement worker / liquidator per chain)",
      registers: [options.registry],
      async collect() {
        gauge.set((await lockHeld()) ? 1 : 0);
      },
    });
  }
  return async () => {
    const [dependencies, lock] = await Promise.all([probe(), lockHeld?.() ?? Promise.resolve(null)]);
    const ready = Object.values(dependencies).every(Boolean) && lock !== false;
    return { ready, ...dependencies, ...(lock === null ? {} : { lock }) };
  };
}

/**
 * The internal listener of a chain worker that holds a per-chain session lock (settlement worker,
 * liquidator, audit anchorer): GET /metrics, /healthz, and /readyz on Postgres, the chain RPC and the
 * lock. Started before the worker's first round, so health checks and the scrape target exist first.
 */
export function serveLockedWorkerInternal(options: {
  service: string;
  registry: Registry;
  /** Where the listener logs an unexpected error (shared/http/app.ts). */
  logger: Pick<Logger, 'error' | 'warn'>;
  sql: Sql;
  client: PublicClient;
  lockHeld: () => Promise<boolean>;
  metricsEnabled: boolean;
  host: string;
  port: number;
  portVariable: string;
}): Promise<{ port: number; close(): Promise<void> }> {
  return serveInternal({
    app: createInternalApp({
      registry: options.registry,
      logger: options.logger,
      metricsEnabled: options.metricsEnabled,
      readiness: chainServiceReadiness(options),
    }),
    service: options.service,
    host: options.host,
    port: options.port,
    portVariable: options.portVariable,
  });
}
