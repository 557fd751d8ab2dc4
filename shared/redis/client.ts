/**
 * Redis connections. Factories only; each process and test owns and closes its own.
 *
 * One switch picks the topology for every service: REDIS_CLUSTER_NODES set means a Redis Cluster
 * (ioredis `Cluster`, seeded with those nodes), unset means one Redis at REDIS_URL. Both answer the
 * same commands through the same type, `Redis`; what differs on a cluster is kept here:
 *  - a command's keys must share one hash slot (shared/redis/keys.ts puts all of one user's keys and
 *    their shard's outbox stream under one hash tag), and a pipeline's keys one node;
 *  - a command without keys that reads or changes one server's state (SCAN, INFO, CONFIG) reaches
 *    one node only: `primaries()` hands out every primary's own connection for those;
 *  - pub/sub: `publishMarket` / `subscribeMarket` (shared/redis/market.ts) use sharded pub/sub on a
 *    cluster (docs/redis-layout.md, "Redis Cluster").
 */
import { Cluster, Redis as SingleRedis } from 'ioredis';
import type { Config } from '../config.ts';

/** A connection to one Redis or to a Redis Cluster; the code uses the commands both answer. */
export type Redis = SingleRedis | Cluster;

export interface RedisOptions {
  /** One Redis. Not used when `clusterNodes` lists nodes. */
  url: string;
  /** host:port seed nodes of a Redis Cluster: when not empty, the connection is a cluster client. */
  clusterNodes?: readonly string[];
  /** A command not answered in this time fails (the hot path then falls back to Postgres). */
  commandTimeoutMs?: number;
  /** When false, commands fail at once while disconnected instead of queueing (the hot path's choice). */
  offlineQueue?: boolean;
  connectionName?: string;
  /**
   * Commands issued in the same event-loop tick go out in one write (ioredis auto-pipelining). For a
   * server answering many requests at once: one socket write per tick instead of one per command.
   */
  autoPipelining?: boolean;
  /**
   * The connection will SSUBSCRIBE (a market subscriber). On a cluster this opens a subscriber
   * connection to the primary that owns the channels' slot, moved with the slot on a failover.
   */
  shardedSubscriber?: boolean;
  /**
   * Cluster only: how many MOVED/ASK/TRYAGAIN redirects one command follows before it fails (ioredis's
   * `maxRedirections`, default 16), and how long it waits before resending after TRYAGAIN (ioredis's
   * `retryDelayOnTryAgain`, default 100 ms). The hot path keeps both small: its decisions have a budget,
   * and its script runner retries TRYAGAIN itself against that budget (shared/redis/script.ts).
   */
  clusterRedirections?: { max: number; tryAgainDelayMs: number };
}

/** Reconnect forever with a capped backoff; callers decide what a failed command means. */
const reconnectDelayMs = (attempt: number) => Math.min(50 * attempt, 1_000);

/** `host:port` → ioredis's node form. */
function clusterNode(node: string): { host: string; port: number } {
  const colon = node.lastIndexOf(':');
  return { host: node.slice(0, colon), port: Number(node.slice(colon + 1)) };
}

export function createRedis(options: RedisOptions & { clusterNodes?: undefined }): SingleRedis;
export function createRedis(options: RedisOptions): Redis;
export function createRedis(options: RedisOptions): Redis {
  const connectionName = options.connectionName ?? 'credana';
  const commandTimeout =
    options.commandTimeoutMs === undefined ? {} : { commandTimeout: options.commandTimeoutMs };
  const maxRetriesPerRequest = options.offlineQueue === false ? 0 : 3;
  if (options.clusterNodes !== undefined && options.clusterNodes.length > 0) {
    const cluster = new Cluster(options.clusterNodes.map(clusterNode), {
      enableOfflineQueue: options.offlineQueue ?? true,
      clusterRetryStrategy: reconnectDelayMs,
      // A node's connection is not retried on its own (ioredis's default): a command that finds it
      // closed makes the client re-read the slots, which is how it follows a failover. Retrying the
      // dead primary instead queued commands there until they failed.
      enableAutoPipelining: options.autoPipelining ?? false,
      shardedSubscribers: options.shardedSubscriber ?? false,
      ...(options.clusterRedirections === undefined
        ? {}
        : {
            maxRedirections: options.clusterRedirections.max,
            retryDelayOnTryAgain: options.clusterRedirections.tryAgainDelayMs,
          }),
      lazyConnect: false,
      redisOptions: { ...commandTimeout, maxRetriesPerRequest, connectionName },
    });
    // Connection errors are reported through failed commands; do not crash on the emitter.
    cluster.on('error', () => {});
    cluster.on('node error', () => {});
    return cluster;
  }
  const redis = new SingleRedis(options.url, {
    ...commandTimeout,
    enableOfflineQueue: options.offlineQueue ?? true,
    maxRetriesPerRequest,
    retryStrategy: reconnectDelayMs,
    connectionName,
    lazyConnect: false,
    enableAutoPipelining: options.autoPipelining ?? false,
  });
  // Connection errors are reported through failed commands; do not crash on the emitter.
  redis.on('error', () => {});
  return redis;
}

/** Where a service's Redis is, as the config says (REDIS_CLUSTER_NODES wins over REDIS_URL). */
export type RedisTarget = Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'>;

/**
 * A service's connection: a cluster client when REDIS_CLUSTER_NODES is set, else one Redis at
 * REDIS_URL. Every service entry point connects through this, so the one setting switches them all.
 * @example const redis = createServiceRedis(config, { connectionName: 'ledger-writer' });
 */
export function createServiceRedis(
  target: RedisTarget,
  options: Omit<RedisOptions, 'url' | 'clusterNodes'> = {},
): Redis {
  return createRedis({ ...options, url: target.REDIS_URL, clusterNodes: target.REDIS_CLUSTER_NODES });
}

/** A one-line description of where a target points, for logs and errors (no credentials). */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.REDIS_CLUSTER_NODES.length > 0)
    return `REDIS_CLUSTER_NODES (${target.REDIS_CLUSTER_NODES.join(',')})`;
  return 'REDIS_URL';
}

/** A new connection with the same target and options (a writer's own connection in tests). */
export function duplicateRedis(redis: Redis): Redis {
  // Two calls, one per type: their duplicate() signatures differ, so the union cannot call it at once.
  const copy = isCluster(redis) ? redis.duplicate() : redis.duplicate();
  copy.on('error', () => {});
  return copy;
}

export function isCluster(redis: Redis): redis is Cluster {
  return redis instanceof Cluster;
}

/**
 * A counter of the closes of `redis`'s connections (on a cluster, of any node's). A command in flight
 * when its connection closed may have run in Redis with its reply lost, and the client then sends it
 * again by itself (ioredis's `autoResendUnfulfilledCommands` on one Redis; a cluster client retries it
 * after re-reading the slots): for a command that is not idempotent (XREADGROUP '>' delivers and
 * forgets), a reply that arrives after a close may be the second run's. Compare the count before sending
 * and at the reply.
 */
export function connectionCloses(redis: Redis): () => number {
  let closes = 0;
  const count = () => {
    closes++;
  };
  if (isCluster(redis)) {
    for (const node of redis.nodes('all')) node.on('close', count);
    redis.on('+node', (node: SingleRedis) => node.on('close', count));
  } else {
    redis.on('close', count);
  }
  return () => closes;
}

/**
 * The connection of every primary: the one Redis itself, or each primary of a cluster (after the
 * cluster client has its slots). For commands that act on one server's own state or keyspace: SCAN,
 * INFO, CONFIG GET.
 */
export async function primaries(redis: Redis): Promise<SingleRedis[]> {
  if (!isCluster(redis)) return [redis];
  if (redis.status !== 'ready') {
    await new Promise<void>((resolve, reject) => {
      const onReady = () => {
        redis.off('end', onEnd);
        resolve();
      };
      const onEnd = () => {
        redis.off('ready', onReady);
        reject(new Error('the Redis Cluster connection ended before it was ready'));
      };
      redis.once('ready', onReady);
      redis.once('end', onEnd);
    });
  }
  return redis.nodes('master');
}

/**
 * Calls `each` with every batch of keys matching `pattern`, on every primary (SCAN, never KEYS).
 * A batch comes from one node, so its keys may still span slots: act on them one slot at a time
 * (`deleteKeys`), not with one multi-key command.
 */
export async function scanKeys(
  redis: Redis,
  pattern: string,
  each: (keys: string[]) => Promise<void>,
  countPerCall = 1_000,
): Promise<void> {
  for (const node of await primaries(redis)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', countPerCall);
      cursor = next;
      if (keys.length > 0) await each(keys);
    } while (cursor !== '0');
  }
}

/** UNLINKs keys, one command per key on a cluster (they may span slots). Returns how many existed. */
export async function deleteKeys(redis: Redis, keys: readonly string[]): Promise<number> {
  if (keys.length === 0) return 0;
  if (!isCluster(redis)) return redis.unlink(...keys);
  const deleted = await Promise.all(keys.map((key) => redis.unlink(key)));
  return deleted.reduce((sum, n) => sum + n, 0);
}

/** Deletes every key under a prefix, on every primary. Returns how many were deleted. */
export async function deletePrefix(redis: Redis, prefix: string): Promise<number> {
  let deleted = 0;
  await scanKeys(redis, `${prefix}*`, async (keys) => {
    deleted += await deleteKeys(redis, keys);
  });
  return deleted;
}

export type { Cluster, SingleRedis };
