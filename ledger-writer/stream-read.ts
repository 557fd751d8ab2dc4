/**
 * The writer's stream consumer: reads the owned shards' outbox streams (one command per shard, no BLOCK,
 * so one slot each on a Redis Cluster), claims a taken-over shard's pending entries first, polls idle
 * shards less often, and recreates a consumer group that Redis lost. See writer.ts for the whole loop.
 *
 * Every read checks the shard's lease in the same script (READ_LEASED, CLAIM_LEASED): entries are
 * delivered to this writer's consumer only while it holds the lease. A check before the command would
 * not do: a writer paused between its check and its read (SIGSTOP, a long GC, a VM migration) would
 * read after the new owner took the shard and claimed its pending entries, and what it was handed would
 * sit pending for a fenced consumer, read by no one, while the new owner wrote the entries after them.
 */
import { replyCode } from '../shared/errors.ts';
import type { Logger } from '../shared/observability/logger.ts';
import { errorText } from '../shared/outbox/dead-letters.ts';
import { connectionCloses, type Redis } from '../shared/redis/client.ts';
import { luaScript, runScript } from '../shared/redis/script.ts';
import { limits } from './limits.ts';
import type { LedgerWriterMetrics } from './metrics.ts';
import type { OwnedShard, ShardOwnership } from './shards.ts';

export type ReadEntry = { stream: string; id: string; fields: Record<string, string> | null };
export interface Read {
  entries: ReadEntry[];
  epochs: Map<string, bigint>;
}

export interface StreamReaderOptions {
  redis: Redis;
  group: string;
  consumer: string;
  /** The value of the shard leases this writer holds (shards.ts). */
  writerId: string;
  batchMax: number;
  batchWaitMs: number;
  metrics: LedgerWriterMetrics;
  logger?: Logger | undefined;
  ownership: Pick<ShardOwnership, 'owned' | 'readable' | 'lost'>;
  /** Whether the writer is stopping: the next read then comes back empty at once. */
  isStopping: () => boolean;
}

export type StreamReader = ReturnType<typeof createStreamReader>;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Milliseconds since the epoch encoded in a stream id (`<ms>-<seq>`). */
export function streamIdMs(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

function toFields(flat: unknown): Record<string, string> | null {
  if (!Array.isArray(flat)) return null;
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[String(flat[i])] = String(flat[i + 1]);
  return fields;
}

/** Entries of one stream in a reply; deleted entries (null fields) come back as fields null. */
function toEntries(
  stream: string,
  list: unknown,
): { stream: string; id: string; fields: Record<string, string> | null }[] {
  if (!Array.isArray(list)) return [];
  return list.flatMap((item) => {
    if (!Array.isArray(item)) return [];
    return [{ stream, id: String(item[0]), fields: toFields(item[1]) }];
  });
}

/**
 * The streams of an XREADGROUP reply as [stream, entries] pairs. Over RESP3 (ioredis 6's default) the
 * reply is a map, which arrives flattened as [stream, entries, stream, entries, …]; over RESP2 it is a
 * list of pairs. Both are accepted.
 */
export function streamReply(reply: unknown[] | null): [string, unknown][] {
  if (reply === null || reply.length === 0) return [];
  if (Array.isArray(reply[0]))
    return reply.map((pair) => [String((pair as unknown[])[0]), (pair as unknown[])[1]]);
  const pairs: [string, unknown][] = [];
  for (let i = 0; i + 1 < reply.length; i += 2) pairs.push([String(reply[i]), reply[i + 1]]);
  return pairs;
}

/**
 * XREADGROUP '>' of KEYS[2] if this writer (ARGV[1]) holds the lease KEYS[1]: {1, reply}, else {0}.
 * ARGV: writer id, group, consumer, count. Both keys carry the shard's hash tag (one slot).
 */
const READ_LEASED = luaScript(
  "if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end " +
    "return {1, redis.call('xreadgroup', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', KEYS[2], '>')}",
);
/** XAUTOCLAIM (min idle 0) of KEYS[2] from cursor ARGV[4] if this writer holds the lease: {1, reply}, else {0}. */
const CLAIM_LEASED = luaScript(
  "if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end " +
    "return {1, redis.call('xautoclaim', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'COUNT', ARGV[5])}",
);

/** What a read found when the shard's lease is no longer this writer's. */
export const LEASE_LOST = Symbol('lease lost');

/**
 * Reads one shard at a time (XAUTOCLAIM while claiming, else XREADGROUP), recreating a lost group.
 * Returns LEASE_LOST, having delivered nothing, when this writer no longer holds the shard's lease.
 */
export function createShardReader(
  options: Pick<StreamReaderOptions, 'redis' | 'group' | 'consumer' | 'writerId' | 'metrics' | 'logger'>,
) {
  const { redis, group, consumer, writerId, metrics, logger } = options;
  const closes = connectionCloses(redis);

  /**
   * Redis answered NOGROUP for a shard: the consumer group is gone, with the stream — Redis restarted
   * without its data (docs/operations.md, "Losing Redis"), or the key was deleted. Every entry is new to
   * Redis then, and the group is created again from '0', so the entries appended since are written.
   * Without this the writer would retry the failing read (or ack) forever and write nothing again
   * until restarted.
   */
  async function recreateGroupIfGone(stream: string, error: unknown): Promise<boolean> {
    if (replyCode(error) !== 'NOGROUP') return false;
    logger?.error(
      { stream },
      'ledger writer: the consumer group is gone (Redis lost its data?); creating it again',
    );
    metrics.groupsRecreated.inc();
    try {
      await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
    } catch (e) {
      if (replyCode(e) !== 'BUSYGROUP') throw e;
    }
    return true;
  }

  /**
   * One shard's next entries: while its pending entries are being claimed (just taken over), the next
   * page of XAUTOCLAIM from its cursor; after that, new ones (XREADGROUP '>', no BLOCK).
   */
  async function readShard(shard: OwnedShard, count: number): Promise<ReadEntry[] | typeof LEASE_LOST> {
    const keys = [shard.leaseKey, shard.stream];
    try {
      if (shard.claimCursor !== null) {
        const [held, reply] = await runScript<[number, [string, unknown, unknown?]?]>(
          redis,
          CLAIM_LEASED,
          keys,
          [writerId, group, consumer, shard.claimCursor, count],
        );
        if (held !== 1 || reply === undefined) return LEASE_LOST;
        const entries = toEntries(shard.stream, reply[1]);
        shard.claimCursor = reply[0] === '0-0' ? null : reply[0];
        metrics.entriesClaimed.inc(entries.length);
        return entries;
      }
      const closesBefore = closes();
      const [held, reply] = await runScript<[number, (unknown[] | null)?]>(redis, READ_LEASED, keys, [
        writerId,
        group,
        consumer,
        count,
      ]);
      if (closes() !== closesBefore) {
        // The connection closed while this read was out: the client may have sent it again after an
        // earlier run whose reply was lost (docs/chaos.md bug 10). That run's entries are pending for this
        // consumer and older than these: written after them, a capture would come before its hold. The
        // shard's pending entries, these among them, are claimed again first, in the stream's order.
        shard.claimCursor = '0-0';
        metrics.readsRedone.inc();
        return [];
      }
      if (held !== 1) return LEASE_LOST;
      return streamReply(reply ?? null).flatMap(([stream, list]) => toEntries(stream, list));
    } catch (error) {
      if (await recreateGroupIfGone(shard.stream, error)) {
        shard.claimCursor = null;
        return [];
      }
      // The read may have been delivered with its reply lost (a dropped connection, a timeout): its
      // entries would be pending for this consumer and never read again with '>'. The shard's pending
      // entries are claimed again first; any of them still being written are duplicates, no-ops.
      shard.claimCursor = '0-0';
      throw error;
    }
  }

  return { recreateGroupIfGone, readShard };
}

/** The stream consumer of one writer (see the header); `nextRead` is what the loop calls. */
export function createStreamReader(options: StreamReaderOptions) {
  const { batchMax, batchWaitMs, metrics, logger, ownership } = options;
  const { recreateGroupIfGone, readShard } = createShardReader(options);

  /**
   * One round over the owned shards that are due: one command each, sent together. A shard whose read
   * was full is due again at once, one that had fewer entries after its wait halved, one that had none
   * after its wait doubled (between batchWaitMs and limits.idlePollMsMax). Each shard's count is its share of batchMax, at least
   * limits.shardReadCountMin.
   */
  async function pollRound(): Promise<Read> {
    const now = Date.now();
    const due = [...ownership.owned.values()].filter(
      (shard) => shard.nextPollAtMs <= now && ownership.readable(shard, now),
    );
    const epochs = new Map<string, bigint>();
    if (due.length === 0) return { entries: [], epochs };
    // A busy shard gives at least limits.shardReadCountMin a round, so a read over many busy shards is
    // not a command per entry or two; a read is then at most max(batchMax, shards × that) entries.
    const count = Math.max(Math.min(limits.shardReadCountMin, batchMax), Math.ceil(batchMax / due.length));
    // Settled one by one: what the shards that answered delivered is this consumer's now and must be
    // written, whatever happened to the others (they are read again next round).
    const results = await Promise.allSettled(due.map((shard) => readShard(shard, count)));
    const failed = results.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []));
    if (failed.length === due.length) throw failed[0];
    if (failed.length > 0)
      logger?.warn({ err: errorText(failed[0]), shards: failed.length }, 'ledger writer: shard reads failed');
    const entries: ReadEntry[] = [];
    const after = Date.now();
    for (const [i, shard] of due.entries()) {
      const result = results[i]!;
      if (result.status === 'fulfilled' && result.value === LEASE_LOST) {
        ownership.lost(shard);
        continue;
      }
      const got = result.status === 'fulfilled' ? (result.value as ReadEntry[]) : [];
      metrics.polls.inc({ result: got.length > 0 ? 'entries' : 'empty' });
      if (got.length >= count || shard.claimCursor !== null) {
        // A full read (or pending entries being claimed): there is more, read it at once.
        shard.pollMs = 0;
      } else if (got.length > 0) {
        // Drained: polled again after half its wait (at least batchWaitMs). An empty poll doubles the
        // wait, one with entries halves it, so a shard settles where about half its polls find something:
        // ~35 ms at 20 entries/s, ~190 ms (the cap) at 4/s. Polled again at once, a drained shard was
        // nearly always empty (docs/redis-layout.md has the figures).
        shard.pollMs = Math.max(batchWaitMs, Math.floor(shard.pollMs / 2));
      } else {
        shard.pollMs = Math.min(Math.max(batchWaitMs, shard.pollMs * 2), limits.idlePollMsMax);
      }
      shard.nextPollAtMs = after + shard.pollMs;
      if (got.length === 0) continue;
      epochs.set(shard.stream, shard.epoch);
      for (const entry of got) entries.push(entry);
    }
    return { entries, epochs };
  }

  /**
   * The next entries to write: polls the owned shards until one has something, or until
   * limits.idlePollMsMax passed with nothing (an empty read, as a BLOCK that timed out: the read ahead
   * then ends, and entries appended later wait in Redis, not in this writer's memory, until the batch
   * in hand is written).
   */
  async function nextRead(): Promise<Read> {
    const giveUpMs = Date.now() + limits.idlePollMsMax;
    for (;;) {
      if (options.isStopping() || Date.now() >= giveUpMs) return { entries: [], epochs: new Map() };
      const read = await pollRound();
      if (read.entries.length > 0) {
        // A batch is written once it is full or its first entry has waited batchWaitMs: under light
        // load a read returns a few entries, and writing each handful in its own transaction costs more
        // CPU per entry than the entries themselves (and that CPU is taken from the hot path).
        if (read.entries.length < batchMax && !options.isStopping()) {
          await sleep(batchWaitMs);
          // If this second read fails, write what the first one delivered (it is this consumer's now).
          const more = await pollRound().catch(() => null);
          if (more !== null) {
            for (const entry of more.entries) read.entries.push(entry);
            for (const [stream, epoch] of more.epochs) read.epochs.set(stream, epoch);
          }
        }
        return read;
      }
      // Nothing anywhere: wait for the earliest shard due (or a shard's arrival by the balance timer).
      let nextMs = giveUpMs;
      for (const shard of ownership.owned.values()) nextMs = Math.min(nextMs, shard.nextPollAtMs);
      await sleep(Math.max(1, nextMs - Date.now()));
    }
  }

  return { recreateGroupIfGone, readShard, pollRound, nextRead };
}
