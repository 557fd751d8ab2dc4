/**
 * The writer's lag and backlog: sampled between reads and on a timer of their own, so an alert on the lag
 * sees it grow while one batch is retried (Postgres down) and no batch ends.
 */
import type { Redis } from '../shared/redis/client.ts';
import { deadLetterKey } from '../shared/redis/keys.ts';
import { limits } from './limits.ts';
import type { LedgerWriterMetrics } from './metrics.ts';
import type { ShardOwnership } from './shards.ts';
import { streamIdMs } from './stream-read.ts';

export interface LagSamplerOptions {
  redis: Redis;
  prefix: string;
  metrics: LedgerWriterMetrics;
  ownership: Pick<ShardOwnership, 'owned'>;
}

/** Samples the owned shards' lag (age of the oldest unwritten entry), backlog and the dead letters. */
export function createLagSampler(options: LagSamplerOptions) {
  const { redis, metrics, ownership } = options;
  const deadLetter = deadLetterKey(options.prefix);
  let lagMs = 0;
  let lastLagSampleMs = 0;

  /** Lag and backlog of the owned shards (each writer reports its own; a dashboard takes the max/sum). */
  async function sampleLag(force = false): Promise<void> {
    const now = Date.now();
    if (!force && now - lastLagSampleMs < limits.lagSampleIntervalMs) return;
    lastLagSampleMs = now;
    const streams = [...ownership.owned.values()].map((shard) => shard.stream);
    const [deadLetters, samples] = await Promise.all([
      redis.xlen(deadLetter),
      Promise.all(
        streams.map(async (stream) => {
          const [first, length] = await Promise.all([
            redis.xrange(stream, '-', '+', 'COUNT', 1),
            redis.xlen(stream),
          ]);
          return { id: first[0]?.[0], length };
        }),
      ),
    ]);
    metrics.deadLetters.set(deadLetters);
    let oldestMs = Number.POSITIVE_INFINITY;
    let backlog = 0;
    for (const { id, length } of samples) {
      if (id !== undefined) oldestMs = Math.min(oldestMs, streamIdMs(id));
      backlog += length;
    }
    lagMs = Number.isFinite(oldestMs) ? Math.max(0, now - oldestMs) : 0;
    metrics.lagMs.set(lagMs);
    metrics.backlog.set(backlog);
  }

  return {
    sampleLag,
    /** Age in ms of the oldest unwritten entry of the owned shards, as last sampled. */
    get lagMs() {
      return lagMs;
    },
  };
}
