/**
 * Reading a consumer group across all outbox shards' streams. On one Redis: one XREADGROUP over every
 * stream, blocking up to `blockMs` for new entries. On a Redis Cluster the streams are in different
 * slots, and a command's keys must share one (CROSSSLOT otherwise): one non-blocking XREADGROUP per
 * stream, sent together (each to its node), and when none has anything, a pause of `blockMs` before
 * the caller reads again. A blocking read is not used there: it would hold the cluster client's one
 * connection to its node, and every other command to that node would wait behind it.
 */
import { isCluster, type Redis } from './client.ts';

export interface ReadGroupOptions {
  group: string;
  consumer: string;
  streams: readonly string[];
  /** `>` for new entries, `0` for this consumer's pending ones. */
  id: string;
  /** Per stream, as XREADGROUP's COUNT. */
  count: number;
  /** How long to wait for new entries when there are none (0: answer at once). */
  blockMs: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** XREADGROUP's reply for `streams` (null when nothing was read), on one Redis or a cluster. */
export async function readGroupAcross(redis: Redis, options: ReadGroupOptions): Promise<unknown[] | null> {
  const { group, consumer, streams, id, count, blockMs } = options;
  if (!isCluster(redis)) {
    const block = blockMs > 0 ? ['BLOCK', String(blockMs)] : [];
    return (await redis.call(
      'XREADGROUP',
      'GROUP',
      group,
      consumer,
      'COUNT',
      String(count),
      ...block,
      'STREAMS',
      ...streams,
      ...streams.map(() => id),
    )) as unknown[] | null;
  }
  const replies = await Promise.all(
    streams.map(
      (stream) =>
        redis.call(
          'XREADGROUP',
          'GROUP',
          group,
          consumer,
          'COUNT',
          String(count),
          'STREAMS',
          stream,
          id,
        ) as Promise<unknown[] | null>,
    ),
  );
  const read = replies.flatMap((reply) => reply ?? []);
  if (read.length > 0) return read;
  if (blockMs > 0) await sleep(blockMs);
  return null;
}
