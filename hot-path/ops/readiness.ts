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
import { Gauge, type Registry } from 'prom-client';
import type { Sql } from '../../shared/db/client.ts';
import type { Redis } from '../../shared/redis/client.ts';

/** A probe answers within this, whatever the dependency does (a dead host must not stall /readyz). */
export const PROBE_TIMEOUT_MS = 1_000;

export type Dependency = 'redis' | 'postgres';
export type DependencyStatus = Record<Dependency, boolean>;

/** Pings Redis and Postgres at once; each answers false on an error or after PROBE_TIMEOUT_MS. */
export type DependencyProbe = () => Promise<DependencyStatus>;

/**
 * Checks one dependency with at most one check in flight: a call while the previous check still waits
 * (a dead host, a connect timeout) shares it instead of queueing another query behind it; each caller
 * gives up after PROBE_TIMEOUT_MS.
 */
function singleFlight(check: () => Promise<unknown>): () => Promise<boolean> {
  let pending: Promise<boolean> | null = null;
  return async () => {
    pending ??= check()
      .then(
        () => true,
        () => false,
      )
      .finally(() => {
        pending = null;
      });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS);
    });
    try {
      return await Promise.race([pending, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
}

/**
 * A probe of both dependencies that also sets `credana_dependency_up{dependency}` (1 up, 0 down) on
 * `registry`, both when called (by /readyz) and on every scrape of the registry.
 */
export function createDependencyProbe(deps: { redis: Redis; sql: Sql; registry: Registry }): DependencyProbe {
  const pingRedis = singleFlight(() => deps.redis.ping());
  const pingPostgres = singleFlight(() => deps.sql`select 1`.execute());
  const probe = async (): Promise<DependencyStatus> => {
    const [redis, postgres] = await Promise.all([pingRedis(), pingPostgres()]);
    gauge.set({ dependency: 'redis' }, redis ? 1 : 0);
    gauge.set({ dependency: 'postgres' }, postgres ? 1 : 0);
    return { redis, postgres };
  };
  const gauge: Gauge<'dependency'> = new Gauge({
    name: 'credana_dependency_up',
    help: 'Whether a dependency answered its probe (1) or not (0), measured at each scrape and /readyz',
    labelNames: ['dependency'] as const,
    registers: [deps.registry],
    async collect() {
      await probe();
    },
  });
  return probe;
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
