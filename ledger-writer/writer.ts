/**
 * The ledger writer: drains the hot path's outbox streams (one per shard, shared/redis/keys.ts) into
 * Postgres through one consumer group. Several writers share the shards: each shard is owned by one
 * writer at a time, with a lease in Redis and a fence in Postgres (shards.ts), so its entries are
 * written in order; a dead writer's shards are taken over, its pending entries claimed and written first.
 *
 * Loop: read the owned shards (one XREADGROUP per shard, no BLOCK: every command names one stream, so
 * one slot on a Redis Cluster; a shard just taken over is first drained of its pending entries with
 * XAUTOCLAIM; a shard that had nothing is polled again after a wait that doubles from batchWaitMs up to
 * limits.idlePollMsMax, one that had entries at once; a read that is not full waits batchWaitMs once
 * for more, so a batch is full or its first entry waited batchWaitMs) → validate → apply in
 * batches of at most batchMax, one transaction each, split by user into `lanes` written concurrently →
 * only after COMMIT, XACK + XDEL them (MULTI per stream), so a stream holds exactly the entries not yet
 * written and its memory stays bounded by them. The stages overlap: the next read and its validation
 * run while this one is written (one read ahead, never more), and a batch's ack travels while the next
 * batch is written (one ack outstanding, never more). Every transaction first checks the fence of its
 * entries' shards; one that finds a shard taken over rolls back, and that shard's entries are left to
 * its new owner (FencedError).
 *
 * Failures, by what to do about them:
 * - retryable (Postgres unreachable, a deadlock or serialization conflict, a permission problem): retry
 *   the same batch forever with capped backoff, acking nothing — nothing is lost, and the entries stay
 *   pending for this writer while it keeps its shards (the leases are renewed on a timer of their own);
 * - data (a check or foreign-key violation, bad data): the batch is retried entry by entry to isolate the
 *   poison; an entry that fails alone limits.poisonAttemptsMax times, or fails validation at once, is
 *   copied with its error to the dead-letter stream and acked, so it never blocks the others. Its
 *   effect stays in Redis (the hot path acted on it); when Postgres lacks its money, the user is first
 *   added to the user's dead-letter set, which keeps every rebuild of that user's cache from Postgres
 *   away until an operator replays it (dead-letters.ts). The `credana_ledger_dead_letters` gauge and
 *   an error log (entry ids, user, amount, error — never the record) raise the alarm. An entry whose
 *   money committed and whose raw event alone failed (apply.ts ArchiveError) is dead-lettered as
 *   `archive`, leaving the user alone.
 * It is an invariant that an entry is acked only after its effects are committed or it is dead-lettered.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Sql } from '../shared/db/client.ts';
import { classifyError, replyCode } from '../shared/errors.ts';
import type { Logger } from '../shared/observability/logger.ts';
import {
  appendDeadLetter,
  type DeadLetterProblem,
  errorText,
  missesMoney,
  summarize,
} from '../shared/outbox/dead-letters.ts';
import type { RawEntry } from '../shared/outbox/records.ts';
import { HOLD_EXPIRY_DEFAULTS } from '../shared/policy/hold-expiry.ts';
import type { Redis } from '../shared/redis/client.ts';
import { deadLetterKey, OUTBOX_SHARDS } from '../shared/redis/keys.ts';
import { assertLimits, limits } from './limits.ts';
import type { LedgerWriterMetrics } from './metrics.ts';
import { checkFence, createShardOwnership, type OwnedShard } from './shards.ts';
import {
  type ApplyOptions,
  ArchiveError,
  applyBatch,
  FencedError,
  type ParsedEntry,
  parseEntry,
} from './write-batch.ts';

export const CONSUMER_GROUP = 'ledger-writer';

export interface LedgerWriterOptions {
  /** The writer's connection (no command blocks on it: shards are polled). */
  redis: Redis;
  sql: Sql;
  prefix: string;
  /** Unique per process (e.g. host + pid): the consumer name in the group. */
  consumer: string;
  batchMax: number;
  batchWaitMs: number;
  metrics: LedgerWriterMetrics;
  logger?: Logger;
  /**
   * A shard's lease in Redis (LEDGER_SHARD_LEASE_MS; defaults to limits.shardLeaseMsDefault): a killed
   * writer's shards are taken over after at most leaseMs × 1.25.
   */
  leaseMs?: number;
  /**
   * Shards 0..shardCount-1. Defaults to OUTBOX_SHARDS, the only right value in service; another count
   * only compares polling costs in `npm run bench:ledger`.
   */
  shardCount?: number;
  apply?: ApplyOptions;
  group?: string;
  /** Batches written concurrently, split by user (defaults to limits.applyLanes); needs as many connections. */
  lanes?: number;
}

type ReadEntry = { stream: string; id: string; fields: Record<string, string> | null };
type RawByKey = Map<string, RawEntry>;
interface Prepared {
  /** Entries in the read, valid or not. */
  read: number;
  valid: ParsedEntry[];
  raws: RawByKey;
  /** The fencing epoch of each stream read, as owned when read: every transaction checks it. */
  epochs: Map<string, bigint>;
}
interface Read {
  entries: ReadEntry[];
  epochs: Map<string, bigint>;
}

export type WriterState = 'idle' | 'running' | 'retrying' | 'stopping' | 'stopped';

export interface LedgerWriter {
  /** Creates the consumer groups and starts consuming; resolves once consuming. */
  start(): Promise<void>;
  /** Finishes the current batch (or gives up retrying one), then resolves. Nothing unwritten is acked. */
  stop(): Promise<void>;
  readonly state: WriterState;
  /** Age in ms of the oldest unwritten entry of the owned shards, as last sampled. */
  readonly lagMs: number;
  /** The shards this writer owns now. */
  readonly shards: readonly number[];
}

/**
 * Whether the whole batch is retried (true) rather than isolated entry by entry to find a poison one
 * (false), by the error's class (shared/errors.ts): an outage (`environment`: a connection, a
 * conflict, a timeout, a restart) and the deployment's fault (`deployment`: a missing grant or
 * migration) are retried with backoff — no entry could be written, and dead-lettering good entries
 * would leave them all to replay by hand; the writer reports `retrying` meanwhile. The record's
 * fault (`data`: SQLSTATE classes 22, 23) and anything else (`bug`: a RAISE, a TypeError) are
 * isolated, so one bad entry is dead-lettered and the others written.
 */
export function isRetryable(error: unknown): boolean {
  const { fault } = classifyError(error);
  return fault === 'environment' || fault === 'deployment';
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The lane of an entry: by user, so every entry that moves one user's money (and every authorization,
 * which belongs to one user) is written by one lane, in order. Entries without a user move no money.
 */
export function laneOf(entry: ParsedEntry, lanes: number): number {
  if (lanes === 1) return 0;
  const record = entry.item.record;
  const key = record.userId ?? record.authorizationId ?? record.eventId;
  let hash = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % lanes;
}

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

export function createLedgerWriter(options: LedgerWriterOptions): LedgerWriter {
  const { redis, sql, prefix, consumer, batchMax, batchWaitMs, metrics, logger } = options;
  const leaseMs = options.leaseMs ?? limits.shardLeaseMsDefault;
  assertLimits(batchMax, batchWaitMs, leaseMs);
  const group = options.group ?? CONSUMER_GROUP;
  const lanes = options.lanes ?? limits.applyLanes;
  assert(
    Number.isInteger(lanes) && lanes >= 1 && lanes <= limits.applyLanesMax,
    `lanes must be 1..${limits.applyLanesMax}`,
  );
  const shardCount = options.shardCount ?? OUTBOX_SHARDS;
  assert(
    Number.isInteger(shardCount) && shardCount >= 1 && shardCount <= limits.benchShardCountMax,
    `shardCount must be 1..${limits.benchShardCountMax}`,
  );
  const deadLetter = deadLetterKey(prefix);
  const ownership = createShardOwnership({
    redis,
    sql,
    prefix,
    writerId: `${consumer}/${randomBytes(4).toString('hex')}`,
    group,
    consumer,
    leaseMs,
    shardCount,
    metrics,
    logger,
  });
  let state: WriterState = 'idle';
  let stopping = false;
  let loop: Promise<void> | null = null;
  let lagMs = 0;
  let lastLagSampleMs = 0;
  // Lag and backlog are sampled on a timer too, not only between batches: while one batch is retried
  // (Postgres down) no batch ends, and an alert on the lag must still see it grow.
  let lagTimer: NodeJS.Timeout | null = null;
  let maintainTimer: NodeJS.Timeout | null = null;

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

  /** XACK + XDEL, atomically per stream (one slot each). Retried until Redis answers (the writes are committed). */
  async function ack(entries: readonly { stream: string; id: string }[]): Promise<void> {
    if (entries.length === 0) return;
    const byStream = new Map<string, string[]>();
    for (const e of entries) {
      const ids = byStream.get(e.stream) ?? [];
      ids.push(e.id);
      byStream.set(e.stream, ids);
    }
    await Promise.all(
      [...byStream].map(async ([stream, ids]) => {
        for (let backoff: number = limits.retryBackoffMsMin, attempt = 0; ; attempt++) {
          try {
            await redis
              .multi()
              .xack(stream, group, ...ids)
              .xdel(stream, ...ids)
              .exec();
            return;
          } catch (error) {
            // The group went with Redis's data: these entries are gone from Redis too (written, so
            // nothing to ack); the group is recreated for the entries that come after.
            if (await recreateGroupIfGone(stream, error).catch(() => false)) return;
            // Unacked entries are re-delivered and re-applied as duplicates: safe, so giving up on stop is fine.
            if (stopping && attempt >= 3) return;
            logger?.warn({ err: errorText(error) }, 'ledger writer: ack failed, retrying');
            await sleep(backoff);
            backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
          }
        }
      }),
    );
  }

  async function deadLetterEntry(raw: RawEntry, error: string, problem: DeadLetterProblem): Promise<void> {
    const summary = summarize(raw.fields);
    const money = missesMoney(problem, summary);
    for (let backoff: number = limits.retryBackoffMsMin; ; ) {
      try {
        await appendDeadLetter(redis, prefix, raw, error, problem);
        break;
      } catch (e) {
        if (stopping) return; // not acked: it comes back and is dead-lettered then
        logger?.warn({ err: errorText(e) }, 'ledger writer: dead-letter append failed, retrying');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
      }
    }
    metrics.deadLettered.inc({ problem });
    const outstanding = await redis.xlen(deadLetter).catch(() => null); // else the next lag sample sets it
    if (outstanding !== null) metrics.deadLetters.set(outstanding);
    // Ids, user and amount only: the record and its raw event stay out of the logs.
    logger?.error(
      {
        stream: raw.stream,
        id: raw.id,
        problem,
        kind: summary.kind,
        userId: summary.userId,
        amountCents: summary.amountCents?.toString() ?? null,
        missesMoney: money,
        error,
      },
      money
        ? 'ledger writer: entry dead-lettered; Postgres lacks its money until it is replayed'
        : 'ledger writer: entry dead-lettered',
    );
    await ack([raw]);
  }

  /**
   * The ack of the last written read, still in flight. Acks run behind the writes: the next read is
   * applied while this one's XACK + XDEL travel. At most one is outstanding (the next waits for it), and
   * each starts only after its batches' COMMITs resolved, so nothing is acked before it is written.
   */
  let acking: Promise<void> = Promise.resolve();

  /**
   * Committed: ack in the background. ack() never rejects (it retries, and gives up only when
   * stopping, which leaves the entries to be re-delivered and found duplicates).
   */
  async function ackBehind(entries: readonly { stream: string; id: string }[]): Promise<void> {
    const previous = acking;
    acking = previous.then(() => ack(entries));
    await previous;
  }

  /**
   * Applies one batch. Its entries, once committed, go to `committed`, acked together when the read
   * they came in is written (one XACK + XDEL per stream and read, not per batch: a read spans many
   * shards).
   */
  async function applyTimed(
    batch: readonly ParsedEntry[],
    epochs: ReadonlyMap<string, bigint>,
    committed: ParsedEntry[],
  ): Promise<void> {
    const fenced = new Map<string, bigint>();
    for (const entry of batch) fenced.set(entry.stream, epochs.get(entry.stream) ?? -1n);
    const end = metrics.batchDuration.startTimer();
    const result = await applyBatch(sql, batch, {
      ...(options.apply ?? { holdExpiry: HOLD_EXPIRY_DEFAULTS }),
      fence: (tx) => checkFence(tx, fenced, leaseMs),
    });
    end();
    metrics.batchSize.observe(batch.length);
    for (const entry of batch) committed.push(entry);
    metrics.entriesWritten.inc({ result: 'applied' }, result.applied);
    metrics.entriesWritten.inc({ result: 'duplicate' }, result.duplicates);
  }

  /**
   * A transaction found shards taken over: they are dropped, and their entries left pending for the new
   * owner (not acked, not dead-lettered). Returns the entries still this writer's to write.
   */
  function withoutFenced(
    batch: ParsedEntry[],
    error: FencedError,
    epochs: ReadonlyMap<string, bigint>,
  ): ParsedEntry[] {
    ownership.fenced(error.streams, epochs);
    const lost = new Set(error.streams);
    logger?.warn(
      { streams: error.streams },
      'ledger writer: shards taken over mid-batch; left to their owner',
    );
    return batch.filter((entry) => !lost.has(entry.stream));
  }

  /** Applies one batch; returns false when it gave up because the writer is stopping. */
  async function applyWithRetry(
    batch: ParsedEntry[],
    raws: RawByKey,
    epochs: ReadonlyMap<string, bigint>,
    committed: ParsedEntry[],
  ): Promise<boolean> {
    let backoff: number = limits.retryBackoffMsMin;
    for (;;) {
      if (batch.length === 0) return true;
      try {
        await applyTimed(batch, epochs, committed);
        if (state === 'retrying') state = 'running';
        return true;
      } catch (error) {
        if (error instanceof FencedError) {
          batch = withoutFenced(batch, error, epochs);
          continue;
        }
        if (!isRetryable(error)) {
          metrics.batchFailures.inc({ kind: 'data' });
          logger?.warn(
            { err: errorText(error), code: classifyError(error).code, size: batch.length },
            'ledger writer: batch failed, isolating',
          );
          return isolate(batch, raws, epochs, committed);
        }
        metrics.batchFailures.inc({ kind: 'retryable' });
        if (stopping) return false;
        state = 'retrying';
        logger?.warn(
          { err: errorText(error), code: classifyError(error).code, backoffMs: backoff },
          'ledger writer: Postgres unavailable, retrying',
        );
        await sleep(backoff);
        backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
      }
    }
  }

  /** Entry by entry, in order, so a poison entry is found and the others are written. */
  async function isolate(
    batch: ParsedEntry[],
    raws: RawByKey,
    epochs: ReadonlyMap<string, bigint>,
    committed: ParsedEntry[],
  ): Promise<boolean> {
    const lost = new Set<string>();
    for (let i = 0; i < batch.length; i++) {
      const entry = batch[i]!;
      if (lost.has(entry.stream)) continue;
      for (let attempt = 1; ; attempt++) {
        try {
          await applyTimed([entry], epochs, committed);
          break;
        } catch (error) {
          if (error instanceof FencedError) {
            // Not poison: the shard is someone else's now, and so is this entry.
            for (const stream of error.streams) lost.add(stream);
            withoutFenced([], error, epochs);
            break;
          }
          if (isRetryable(error)) {
            // Not poison after all: the environment failed. Back to whole-batch retries for the rest.
            metrics.batchFailures.inc({ kind: 'retryable' });
            if (stopping) return false;
            await sleep(limits.retryBackoffMsMin);
            return applyWithRetry(
              batch.slice(i).filter((e) => !lost.has(e.stream)),
              raws,
              epochs,
              committed,
            );
          }
          if (attempt >= limits.poisonAttemptsMax) {
            const raw = raws.get(`${entry.stream} ${entry.id}`) ?? {
              stream: entry.stream,
              id: entry.id,
              fields: {},
            };
            await deadLetterEntry(
              raw,
              errorText(error),
              error instanceof ArchiveError ? 'archive' : 'failed',
            );
            break;
          }
          await sleep(limits.poisonRetryDelayMs * attempt);
        }
      }
    }
    return true;
  }

  /**
   * Validates a read: entries already deleted from their stream are acked (written before, only the
   * ack was lost), invalid ones dead-lettered; the rest come back oldest first, with their raw fields
   * (kept to dead-letter a poison entry as it was read).
   */
  async function prepare({ entries, epochs }: Read): Promise<Prepared> {
    const deleted: { stream: string; id: string }[] = [];
    const valid: ParsedEntry[] = [];
    const raws: RawByKey = new Map();
    for (const item of entries) {
      if (item.fields === null) {
        deleted.push(item);
        continue;
      }
      const raw: RawEntry = { stream: item.stream, id: item.id, fields: item.fields };
      const parsed = parseEntry(raw);
      if (!parsed.ok) {
        await deadLetterEntry(raw, parsed.error, 'invalid');
        continue;
      }
      raws.set(`${raw.stream} ${raw.id}`, raw);
      valid.push(parsed.entry);
    }
    await ack(deleted);
    // Stream order across shards: by id time, so one batch is roughly oldest first. The sort is stable,
    // so each stream's entries keep their order.
    valid.sort((a, b) => streamIdMs(a.id) - streamIdMs(b.id));
    return { read: entries.length, valid, raws, epochs };
  }

  /**
   * Applies a prepared read in batches of at most batchMax; false when it gave up because stopping.
   * The entries are split into `lanes` by user, and the lanes are written concurrently, each on its own
   * connection and in stream order within it. Two lanes never touch the same credit account or
   * authorization (both belong to one user), and the natural keys differ, so their transactions do not
   * wait on each other until the audit insert, which every transaction makes last: the chain head is
   * taken in one place, after all other locks, so the lanes cannot deadlock and the chain stays one line.
   * Everything before it — the bulk of the work — runs in parallel. (The fence rows are only ever
   * locked `for share` by the lanes, which do not conflict.)
   */
  async function applyPrepared({ valid, raws, epochs }: Prepared): Promise<boolean> {
    // A small read goes in one transaction: split, it would cost two commits for no parallelism gained.
    const laneCount = valid.length < limits.laneSplitEntriesMin ? 1 : lanes;
    const byLane: ParsedEntry[][] = Array.from({ length: laneCount }, () => []);
    for (const entry of valid) byLane[laneOf(entry, laneCount)]!.push(entry);
    const committed: ParsedEntry[] = [];
    const finished = await Promise.all(
      byLane.map(async (lane) => {
        for (let i = 0; i < lane.length; i += batchMax) {
          if (!(await applyWithRetry(lane.slice(i, i + batchMax), raws, epochs, committed))) return false;
        }
        return true;
      }),
    );
    await ackBehind(committed);
    return finished.every(Boolean);
  }

  /**
   * One shard's next entries: while its pending entries are being claimed (just taken over), the next
   * page of XAUTOCLAIM from its cursor; after that, new ones (XREADGROUP '>', no BLOCK).
   */
  async function readShard(shard: OwnedShard, count: number): Promise<ReadEntry[]> {
    try {
      if (shard.claimCursor !== null) {
        const reply = (await redis.xautoclaim(
          shard.stream,
          group,
          consumer,
          0,
          shard.claimCursor,
          'COUNT',
          count,
        )) as [string, unknown, unknown?];
        const entries = toEntries(shard.stream, reply[1]);
        shard.claimCursor = reply[0] === '0-0' ? null : reply[0];
        metrics.entriesClaimed.inc(entries.length);
        return entries;
      }
      const reply = (await redis.call(
        'XREADGROUP',
        'GROUP',
        group,
        consumer,
        'COUNT',
        count,
        'STREAMS',
        shard.stream,
        '>',
      )) as unknown[] | null;
      return streamReply(reply).flatMap(([stream, list]) => toEntries(stream, list));
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

  /**
   * One round over the owned shards that are due: one command each, sent together. A shard that had
   * entries is due again at once, one that had none after its wait doubled (batchWaitMs up to
   * limits.idlePollMsMax). Each shard's count is its share of batchMax, at least
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
      const got = result.status === 'fulfilled' ? result.value : [];
      metrics.polls.inc({ result: got.length > 0 ? 'entries' : 'empty' });
      if (got.length > 0 || shard.claimCursor !== null) {
        shard.pollMs = 0;
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
      if (stopping || Date.now() >= giveUpMs) return { entries: [], epochs: new Map() };
      const read = await pollRound();
      if (read.entries.length > 0) {
        // A batch is written once it is full or its first entry has waited batchWaitMs: under light
        // load a read returns a few entries, and writing each handful in its own transaction costs more
        // CPU per entry than the entries themselves (and that CPU is taken from the hot path).
        if (read.entries.length < batchMax && !stopping) {
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

  /**
   * The loop reads and validates the next entries while the current ones are written (one read ahead,
   * never more), and acks behind the writes (see applyTimed). A shard is never read twice over the same
   * entries: new ones come from '>', a taken-over shard's pending ones from an XAUTOCLAIM cursor.
   */
  async function run(): Promise<void> {
    let backoff: number = limits.retryBackoffMsMin;
    let ahead: Promise<Prepared> | null = null;
    while (!stopping || ahead !== null) {
      try {
        const source = ahead;
        ahead = null;
        const current: Prepared = await (source ?? nextRead().then(prepare));
        if (current.valid.length > 0 && !stopping) {
          ahead = nextRead().then(prepare);
          // Observed now so a failure is not an unhandled rejection; it is rethrown when awaited.
          ahead.catch(() => undefined);
        }
        const finished = await applyPrepared(current);
        await sampleLag(current.read === 0);
        backoff = limits.retryBackoffMsMin;
        if (!finished) break;
      } catch (error) {
        // Redis unreachable (Postgres failures are retried inside applyPrepared): wait and go on.
        logger?.warn({ err: errorText(error) }, 'ledger writer: read failed, retrying');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
      }
    }
    // Entries read ahead but not written (stopping while a batch kept failing) stay pending for this
    // consumer: whoever takes the shard next claims them.
    // Both are awaited so nothing still uses Redis once stop() resolves.
    await ahead?.catch(() => undefined);
    await acking;
  }

  return {
    get state() {
      return state;
    },
    get lagMs() {
      return lagMs;
    },
    get shards() {
      return [...ownership.owned.keys()].sort((a, b) => a - b);
    },
    async start() {
      if (loop !== null) return;
      // Takes this writer's share of the free shards before consuming; more come with the timer.
      await ownership.maintain();
      state = 'running';
      lagTimer = setInterval(() => {
        sampleLag().catch(() => undefined); // Redis away: the next sample tries again
      }, limits.lagSampleIntervalMs);
      lagTimer.unref();
      maintainTimer = setInterval(() => {
        ownership.maintain().catch(() => undefined); // logged inside; the next round tries again
      }, leaseMs / 4);
      maintainTimer.unref();
      loop = run().finally(() => {
        state = 'stopped';
      });
    },
    async stop() {
      stopping = true;
      if (lagTimer !== null) clearInterval(lagTimer);
      if (maintainTimer !== null) clearInterval(maintainTimer);
      if (state !== 'stopped') state = 'stopping';
      await loop;
      // Written and acked what it could: its shards go to the others at once, not after the lease.
      await ownership.releaseAll();
      state = 'stopped';
    },
  };
}
