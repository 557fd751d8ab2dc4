/**
 * Readiness of the hot path and the ledger writer, and the `credana_dependency_up` gauge.
 *
 * What "ready" means differs by service, because what each needs to do its job differs:
 * - The hot path decides from Redis; Postgres is only its fallback (and the Redis path survives a
 *   Postgres outage). It is ready while Redis answers and the process is not *suspect*
 *   (decision/redis-lease.ts). Postgres is reported, and exported as a gauge, but never fails readiness:
 *   failing it would take every instance out of the load balancer during exactly the outage the hot
 *   path is built to survive.
 * - The ledger writer copies Redis outbox streams into Postgres: it needs both, so it is ready only
 *   while both answer (its liveness, /healthz, stays up while it retries).
 */
import type { Registry } from 'prom-client';
import type { Sql } from '../db/client.ts';
import type { Redis } from '../redis/client.ts';
import { createProbes } from './health.ts';

export { PROBE_TIMEOUT_MS } from './health.ts';

export type Dependency = 'redis' | 'postgres';
export type DependencyStatus = Record<Dependency, boolean>;

/** Pings Redis and Postgres at once; each answers false on an error or after PROBE_TIMEOUT_MS. */
export type DependencyProbe = () => Promise<DependencyStatus>;

/**
 * A probe of both dependencies that also sets `credana_dependency_up{dependency}` (1 up, 0 down) on
 * `registry`, both when called (by /readyz) and on every scrape of the registry
 * (shared/observability/health.ts).
 */
export function createDependencyProbe(deps: { redis: Redis; sql: Sql; registry: Registry }): DependencyProbe {
  return createProbes(deps.registry, {
    redis: () => deps.redis.ping(),
    postgres: () => deps.sql`select 1`.execute(),
  });
}

export interface ReadinessStatus extends DependencyStatus {
  ready: boolean;
  /** The hot path only: after a failed Redis attempt it decides nothing from Redis until it recovers. */
  suspect?: boolean;
}
export type Readiness = () => Promise<ReadinessStatus>;

/** The hot path: ready while Redis answers and the process is not suspect; Postgres only reported. */
export function hotPathReadiness(probe: DependencyProbe, lease: { suspect(): boolean }): Readiness {
  return async () => {
    const status = await probe();
    const suspect = lease.suspect();
    return { ready: status.redis && !suspect, ...status, suspect };
  };
}

/** The ledger writer: ready only while both Redis (its source) and Postgres (its sink) answer. */
export function ledgerWriterReadiness(probe: DependencyProbe): Readiness {
  return async () => {
    const status = await probe();
    return { ready: status.redis && status.postgres, ...status };
  };
}
