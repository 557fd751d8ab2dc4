/**
 * The reconciliation runner's public face: builds any job from the shared services and runs it
 * recorded (runs.ts). Used by the CLI (`npm run reconcile -- <job>`), the local scheduler, and the
 * QStash receiver (http.ts).
 */

import type { Registry } from 'prom-client';
import { createPublicClient, http } from 'viem';
import { readContractsFile } from '../shared/chain/contracts/index.ts';
import { analyticsDatabaseUrl, analyticsHistory, type Config } from '../shared/config.ts';
import { createDatabase, type Database } from '../shared/db/client.ts';
import { openReplicaReader, type ReplicaReader } from '../shared/db/replica.ts';
import { createLifecycle, type Lifecycle } from '../shared/lifecycle/handler.ts';
import { createLogger, type Logger } from '../shared/observability/index.ts';
import { createServiceRedis, type Redis } from '../shared/redis/client.ts';
import { detectBackend, readAsAnalytics, refreshAnalytics, setUpAnalytics } from './analytics/index.ts';
import { anchorsJob } from './anchors.ts';
import { booksJob } from './books.ts';
import { cacheJob } from './cache.ts';
import { chainJob } from './chain.ts';
import { holdsJob } from './holds.ts';
import { limits } from './limits.ts';
import { createReconcileMetrics, type ReconcileMetrics } from './metrics.ts';
import { type JobFunction, type RunResult, runRecorded } from './runs.ts';
import { stripeApiJob, stripeJob } from './stripe.ts';
import { createStripeApiClient } from './stripe-api.ts';
import { closedAuthorizationIds, readAuthorizationsExport, readTransactionsExport } from './stripe-export.ts';
import { RUNNABLE, type Runnable } from './types.ts';
import { holdSweepJob } from './upkeep/hold-sweep.ts';
import { partitionsJob } from './upkeep/partitions.ts';
import { summaryJob } from './upkeep/summary.ts';

export type { RunResult } from './runs.ts';
export { JOB_NAMES, type JobName } from './types.ts';

/** Everything a run can be asked to do from outside: the CLI's flags, the receiver's body. */
export interface JobArgs {
  /** Report only; no repair (cache, holds). */
  dryRun?: boolean;
  /**
   * Stripe Issuing transactions export (JSON list or CSV): `stripe` reconciles this file instead of
   * reading Stripe's API (a manual run).
   */
  transactionsFile?: string;
  /**
   * Stripe Issuing authorizations export — optional for `holds` (releases holds Stripe closed) and for
   * `stripe` on an export (authorization findings).
   */
  authorizationsFile?: string;
  /**
   * Period of the `stripe` job, Unix seconds [fromS, toS). Without it: on an export, yesterday (UTC);
   * from the API, every whole day since the last one reconciled (the job's cursor).
   */
  fromS?: number;
  toS?: number;
}

export { RUNNABLE, type Runnable };

export function isRunnable(name: string): name is Runnable {
  return (RUNNABLE as readonly string[]).includes(name);
}

export interface ReconcileServices {
  config: Config;
  database: Database;
  redis: Redis;
  logger: Logger;
  metrics: ReconcileMetrics;
  /** Reads that may lag (READ_REPLICA_URL while it keeps up, else the primary): analytics ingestion. */
  replica: ReplicaReader;
  /** The clock every job and run record is judged by (a simulated one in tests). */
  now: () => number;
  close(): Promise<void>;
}

/**
 * Connections, logger and metrics of the reconciliation jobs. The scheduler passes its process
 * registry (shared/observability/metrics.ts) so its /metrics carries the default process metrics too.
 */
export function createReconcileServices(
  config: Config,
  logger?: Logger,
  options: { now?: () => number; registry?: Registry } = {},
): ReconcileServices {
  const database = createDatabase({
    url: config.DATABASE_URL,
    poolMax: Math.min(config.DATABASE_POOL_MAX, 5),
    // Batches are bounded; a statement taking longer than this is a problem worth failing on.
    statementTimeoutMs: 60_000,
    applicationName: 'credana-reconcile',
  });
  const redis = createServiceRedis(config, { connectionName: 'credana-reconcile' });
  const log = logger ?? createLogger(config.LOG_LEVEL, 'reconcile');
  const metrics = createReconcileMetrics(options.registry);
  const replica = openReplicaReader(config, database.sql, {
    name: 'reconcile',
    logger: log,
    registry: metrics.registry,
  });
  return {
    config,
    database,
    redis,
    logger: log,
    metrics,
    replica: replica.reader,
    now: options.now ?? Date.now,
    async close() {
      redis.disconnect();
      await replica.close();
      await database.close();
    },
  };
}

/** Yesterday in UTC, as [fromS, toS). */
export function yesterdayUtc(nowMs: number): { fromS: number; toS: number } {
  const toS = Math.floor(nowMs / 86_400_000) * 86_400;
  return { fromS: toS - 86_400, toS };
}

function jobFunction(name: Runnable, services: ReconcileServices, args: JobArgs): JobFunction {
  const { config, redis } = services;
  const sql = services.database.sql;
  const prefix = config.REDIS_KEY_PREFIX;
  let lifecycle: Lifecycle | null = null;
  const lifecycleOf = () => createLifecycle({ redis, sql, settings: config, now: services.now });
  switch (name) {
    case 'cache':
      return cacheJob({ redis, prefix, repair: args.dryRun !== true });
    case 'holds': {
      lifecycle ??= lifecycleOf();
      const closed =
        args.authorizationsFile === undefined
          ? new Set<string>()
          : closedAuthorizationIds(readAuthorizationsExport(args.authorizationsFile));
      const live = lifecycle;
      // A dry run reports what it would release without releasing it.
      const expireHold: Lifecycle['expireHold'] =
        args.dryRun === true
          ? async (userId) => ({
              applied: false,
              userId,
              holdDeltaCents: 0n,
              unsettledDeltaCents: 0n,
              reviewCents: 0n,
              reviewReason: null,
              rejected: null,
            })
          : (userId, authorizationId) => live.expireHold(userId, authorizationId);
      return holdsJob({ redis, prefix, lifecycle: { expireHold }, stripeClosedAuthorizationIds: closed });
    }
    case 'books':
      return booksJob();
    case 'chain': {
      const contracts = readContractsFile(config.CONTRACTS_FILE);
      const client = createPublicClient({
        transport: http(config.CHAIN_RPC_URL, { retryCount: 2, timeout: 10_000 }),
      });
      return chainJob({ client, contracts });
    }
    case 'anchors': {
      const contracts = readContractsFile(config.CONTRACTS_FILE);
      if (contracts.auditAnchor === undefined) {
        throw new Error(
          `${config.CONTRACTS_FILE} names no auditAnchor contract (npm run chain:deploy deploys one)`,
        );
      }
      return anchorsJob({
        client: createPublicClient({
          transport: http(config.CHAIN_RPC_URL, { retryCount: 2, timeout: 10_000 }),
        }),
        contract: contracts.auditAnchor,
        confirmations: config.CHAIN_CONFIRMATIONS,
        staleAfterS: limits.anchorStaleIntervals * config.AUDIT_ANCHOR_INTERVAL_S + limits.anchorStaleSlackS,
      });
    }
    case 'stripe': {
      const given =
        args.fromS !== undefined && args.toS !== undefined ? { fromS: args.fromS, toS: args.toS } : undefined;
      if (args.transactionsFile !== undefined) {
        return stripeJob({
          transactions: readTransactionsExport(args.transactionsFile),
          ...(args.authorizationsFile === undefined
            ? {}
            : { authorizations: readAuthorizationsExport(args.authorizationsFile) }),
          ...(given ?? yesterdayUtc(services.now())),
        });
      }
      if (config.STRIPE_SECRET_KEY === undefined) {
        throw new Error(
          'the stripe job reads Stripe Issuing from the API with STRIPE_SECRET_KEY, which is not set (or give an export: --transactions <file>)',
        );
      }
      const stripe = createStripeApiClient({
        apiKey: config.STRIPE_SECRET_KEY,
        apiUrl: config.STRIPE_API_URL,
        apiVersion: config.STRIPE_API_VERSION,
      });
      return stripeApiJob({ stripe, ...(given === undefined ? {} : { period: given }) });
    }
    case 'partitions':
      return partitionsJob({ metrics: services.metrics });
    case 'summary':
      return summaryJob({ metrics: services.metrics });
    case 'hold-sweep':
      return holdSweepJob({ redis, prefix, lifecycle: lifecycleOf() });
    case 'analytics':
      return async () => {
        const analytics = createDatabase({
          url: analyticsDatabaseUrl(config),
          poolMax: 2,
          statementTimeoutMs: 600_000,
          applicationName: 'credana-analytics',
        });
        try {
          const backend = await detectBackend(analytics.sql);
          const history = analyticsHistory(config);
          await setUpAnalytics(analytics.sql, backend, history);
          // Ingestion only reads the financial database and may lag: the replica while it keeps up. It
          // reads as credana_analytics (pseudonymous columns only), not as this job's own role.
          const counts = await readAsAnalytics(await services.replica.read(), (financial) =>
            refreshAnalytics({ financial, analytics: analytics.sql, backend, history }),
          );
          return {
            checked: counts.spend + counts.decisions + counts.users,
            findings: [],
            repairs: 0,
            cursor: null,
          };
        } finally {
          await analytics.close();
        }
      };
  }
}

/** Builds and runs one job, recorded in reconciliation_runs. */
export async function runJob(
  name: Runnable,
  services: ReconcileServices,
  args: JobArgs = {},
): Promise<RunResult> {
  let fn: JobFunction;
  try {
    fn = jobFunction(name, services, args);
  } catch (error) {
    // A job that cannot even be built (missing export, contracts file) is a failed run, on record.
    fn = async () => {
      throw error;
    };
  }
  return runRecorded(
    { sql: services.database.sql, metrics: services.metrics, logger: services.logger, now: services.now },
    name,
    fn,
  );
}
