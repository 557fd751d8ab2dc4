/** Redis connections. Factories only; each process and test owns and closes its own. */
import { Redis } from 'ioredis';

export interface RedisOptions {
  url: string;
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
}

export function createRedis(options: RedisOptions): Redis {
  const redis = new Redis(options.url, {
    ...(options.commandTimeoutMs === undefined ? {} : { commandTimeout: options.commandTimeoutMs }),
    enableOfflineQueue: options.offlineQueue ?? true,
    maxRetriesPerRequest: options.offlineQueue === false ? 0 : 3,
    // Reconnect forever with a capped backoff; callers decide what a failed command means.
    retryStrategy: (attempt) => Math.min(50 * attempt, 1_000),
    connectionName: options.connectionName ?? 'credana',
    lazyConnect: false,
    enableAutoPipelining: options.autoPipelining ?? false,
  });
  // Connection errors are reported through failed commands; do not crash on the emitter.
  redis.on('error', () => {});
  return redis;
}

export type { Redis };
