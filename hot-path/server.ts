/**
 * Wires a hot path from its config: connections, market view, engine, lifecycle, app. Used by the
 * process entry point (main.ts), by tests and by benchmarks, so all run the same assembly.
 */
import { hostname } from 'node:os';
import { Client } from '@upstash/qstash';
import type { Config } from '../shared/config.ts';
import { createDatabase, type Sql } from '../shared/db/client.ts';
import { createCardOwners } from '../shared/lifecycle/card-owners.ts';
import { createLifecycle } from '../shared/lifecycle/handler.ts';
import { ADOPT_FALLBACK } from '../shared/lifecycle/lua.ts';
import { createLogger, createServiceRegistry } from '../shared/observability/index.ts';
import type { Logger } from '../shared/observability/logger.ts';
import { createDependencyProbe, hotPathReadiness } from '../shared/observability/readiness.ts';
import { createServiceRedis, type Redis } from '../shared/redis/client.ts';
import { createMarket } from '../shared/redis/market.ts';
import { loadScripts } from '../shared/redis/script.ts';
import { createApp } from './app.ts';
import { createDecisionEngine, type DecisionEngineDeps } from './decision/engine.ts';
import { DECIDE, DECIDE_WITHOUT_USER, RELEASE_UNREPLICATED } from './decision/lua.ts';
import { createRedisLease, type LeaseEvent } from './decision/redis-lease.ts';
import { assertLimits, limits } from './limits.ts';
import { createInternalApp } from './ops/internal-app.ts';
import { createMetrics, type Metrics } from './ops/metrics.ts';
import { createQStashRelay } from './outbox/qstash-relay.ts';

export async function createHotPath(config: Config) {
  assertLimits(config.DECISION_BUDGET_MS, config.REDIS_COMMAND_TIMEOUT_MS, config.REDIS_DECISION_BUDGET_MS);
  const logger = createLogger(config.LOG_LEVEL, 'hot-path');
  const redis = createDecisionRedis(config);
  const subscriber = createServiceRedis(config, { connectionName: 'hot-path-sub', shardedSubscriber: true });
  const database = createDatabase({
    url: config.DATABASE_URL,
    poolMax: config.DATABASE_POOL_MAX,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
    applicationName: 'hot-path',
    connectTimeoutS: 1,
  });
  await waitForRedis(redis);
  await warmUp(config, redis, database.sql, logger);
  const market = await createMarket(redis, subscriber, config.REDIS_KEY_PREFIX);
  const metrics = createMetrics(createServiceRegistry('hot-path'));
  const cardOwners = createCardOwners({ redis, sql: database.sql, prefix: config.REDIS_KEY_PREFIX });
  const lease = createRedisLease({
    sql: database.sql,
    redis,
    prefix: config.REDIS_KEY_PREFIX,
    leaseMs: config.REDIS_DECIDER_LEASE_MS,
    onEvent: reportLeaseEvent(metrics, logger),
  });
  const engine = createDecisionEngine({
    settings: config,
    redis,
    sql: database.sql,
    market,
    cardOwners,
    lease,
    ...reportEngineFailures(metrics, logger),
  });
  const lifecycle = createLifecycle({ redis, sql: database.sql, settings: config, cardOwners });
  // Readiness: Redis answering and the process not suspect; Postgres reported and exported as
  // credana_dependency_up, never failing readiness (ops/readiness.ts).
  const readiness = hotPathReadiness(
    createDependencyProbe({ redis, sql: database.sql, registry: metrics.registry }),
    engine.lease,
  );
  const app = createApp({ settings: config, engine, lifecycle, metrics, logger, readiness });
  // /metrics, /healthz, /readyz for Prometheus and health checks, served by main.ts on its own port.
  const internalApp = createInternalApp({ metrics, readiness, logger });
  // The lease: renewed while Redis answers; after an outage, the fallback's decisions are adopted into
  // the cache before this process decides from Redis again (decision/redis-lease.ts).
  await lease.catchUp();
  lease.start();
  // QUEUE_DRIVER=qstash: a relay publishes the outbox through QStash (see outbox/qstash-relay.ts).
  const qstash = config.QUEUE_DRIVER === 'qstash' ? createRelay(config, logger) : null;
  await qstash?.relay.start();
  return {
    app,
    internalApp,
    engine,
    lifecycle,
    market,
    metrics,
    logger,
    redis,
    database,
    async close() {
      await lease.stop();
      await qstash?.relay.stop();
      qstash?.redis.disconnect();
      market.close();
      redis.disconnect();
      await database.close();
    },
  };
}

/** The Redis connection decisions run on. */
function createDecisionRedis(config: Config): Redis {
  // Commands fail fast while Redis is away (no offline queue), so the fallback gets the time left.
  // No auto-pipelining, on one Redis as on a cluster: each command is written when it is made. Batched,
  // every request's objects were kept past two scavenges (4.5 MB promoted per scavenge at 1,000/s,
  // 7–14 ms pauses) and decisions were slower at full speed too; on a cluster ioredis also hands a
  // redirect inside a batch back as an error (redis/ioredis#2075). docs/hot-path.md, "The tail".
  return createServiceRedis(config, {
    commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS,
    offlineQueue: false,
    connectionName: 'hot-path',
    clusterRedirections: {
      max: limits.clusterRedirectionsMax,
      tryAgainDelayMs: limits.clusterTryAgainDelayMs,
    },
  });
}

/** Preloads the decision scripts and opens Postgres connections before the process says it is ready. */
async function warmUp(config: Config, redis: Redis, sql: Sql, logger: Logger): Promise<void> {
  // Ready means ready: what a start can do ahead of the first swipes is done before the process says so.
  // - The decision scripts go into Redis's script cache: on a fresh Redis every first call would otherwise
  //   answer NOSCRIPT and be sent again with its text.
  // - Postgres connections are opened now rather than in the middle of the first burst. A card's first
  //   decision on a cold cache reads Postgres (the card's owner, then the account: 4 queries at once),
  //   and the pool opens a connection for each query that finds none idle: a burst of cold swipes made
  //   Postgres fork a backend per query while the swipes waited, which on a starved CPU took most of their
  //   budget (ledger-writer/postgres-outage-live.test.ts's warm-up missed it once in CI). The
  //   fallback's first transactions find them open too. A Postgres that is down does not stop the hot
  //   path (it decides from Redis): this waits 1 s at most.
  await Promise.all([
    loadScripts(redis, [DECIDE, DECIDE_WITHOUT_USER, ADOPT_FALLBACK, RELEASE_UNREPLICATED]).catch(
      (error: unknown) => {
        logger.warn({ err: String(error) }, 'decision scripts not preloaded; their first calls load them');
      },
    ),
    Promise.race([
      openConnections(sql, Math.min(config.DATABASE_POOL_MAX, limits.postgresConnectionsAtStart)),
      new Promise((resolve) => setTimeout(resolve, 1_000)),
    ]),
  ]);
}

/** The lease's events, counted (and adoptions logged). */
function reportLeaseEvent(metrics: Metrics, logger: Logger): (event: LeaseEvent) => void {
  return (event) => {
    switch (event.kind) {
      case 'caught_up':
        metrics.leaseEvents.inc({ event: 'caught_up' });
        metrics.fallbackAdoptions.inc(event.adopted);
        if (event.adopted > 0)
          logger.info({ adopted: event.adopted }, 'fallback decisions adopted into Redis');
        break;
      case 'catch_up_failed':
        metrics.leaseEvents.inc({ event: `catch_up_failed_${event.stage}` });
        break;
      case 'postgres_unreachable':
        metrics.leaseEvents.inc({ event: 'postgres_unreachable' });
        break;
    }
  };
}

/** The engine's outage hooks: counted and logged. */
function reportEngineFailures(
  metrics: Metrics,
  logger: Logger,
): Pick<DecisionEngineDeps, 'onRedisFailure' | 'onFallbackFailure' | 'onRedisRedirect'> {
  return {
    // Outages only (shared/errors.ts codes): a bug is not swallowed here but answered 500 by app.ts.
    onRedisFailure: (cause, error) => {
      metrics.redisFailures.inc({ cause });
      // Redis away (or answering too late for its command timeout): the process decides from Postgres
      // until it has caught up, so this is said once per outage (a suspect process makes no Redis
      // attempts). A late reply or a moving cluster slot falls back only its own request: said at info.
      const perRequest = cause === 'deadline' || cause === 'redis_redirect';
      logger[perRequest ? 'info' : 'warn'](
        { cause, err: String(error) },
        'Redis attempt failed; deciding from Postgres',
      );
    },
    onFallbackFailure: (cause, error) => {
      metrics.fallbackFailures.inc({ cause });
      logger.warn({ cause, err: String(error) }, 'Postgres fallback failed; declining system_unavailable');
    },
    onRedisRedirect: (redirect) => metrics.redisRedirects.inc({ redirect }),
  };
}

/** QUEUE_DRIVER=qstash: the outbox relay and its own Redis connection (not started). */
function createRelay(config: Config, logger: Logger) {
  const redis = createServiceRedis(config, { connectionName: 'hot-path-relay' });
  const relay = createQStashRelay({
    redis,
    client: new Client({ token: config.QSTASH_TOKEN ?? '', baseUrl: config.QSTASH_URL }),
    prefix: config.REDIS_KEY_PREFIX,
    destinationUrl: config.LEDGER_WRITER_PUBLIC_URL,
    consumer: `${hostname()}-${process.pid}`,
    batchMax: config.LEDGER_BATCH_MAX,
    blockMs: 1_000,
    onError: (error) => logger.warn({ err: String(error) }, 'qstash relay: publish failed, retrying'),
  });
  return { redis, relay };
}

/** Opens `count` connections of the pool: as many queries at once, none finding an idle connection. */
async function openConnections(sql: Sql, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, () => sql`select 1`.catch(() => {})));
}

async function waitForRedis(redis: Redis): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    if (redis.status === 'ready') return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('hot path: Redis did not become ready in 5 s');
}
