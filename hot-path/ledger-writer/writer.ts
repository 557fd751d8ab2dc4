/**
 * The ledger writer: drains the hot path's 16 outbox streams into Postgres through one consumer group.
 *
 * Loop: claim entries a dead consumer left pending (XAUTOCLAIM, idle > limits.claimIdleMs) → read new
 * ones (XREADGROUP BLOCK batchWaitMs COUNT batchMax over all streams, one call; a read that is not full
 * waits batchWaitMs once for more, so a batch is full or its first entry waited batchWaitMs) → validate → apply in
 * batches of at most batchMax, one transaction each, split by user into `lanes` written concurrently →
 * only after COMMIT, XACK + XDEL them (MULTI per stream), so a stream holds exactly the entries not yet
 * written and its memory stays bounded by them. The stages overlap: the next read and its validation
 * run while this one is written (one read ahead, never more), and a batch's ack travels while the next
 * batch is written (one ack outstanding, never more).
 *
 * Failures, by what to do about them:
 * - retryable (Postgres unreachable, a deadlock or serialization conflict, a permission problem): retry
 *   the same batch forever with capped backoff, acking nothing — nothing is lost, and the entries stay
 *   owned by this consumer (their idle time is refreshed so a live writer's entries are not stolen);
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
import type { Sql } from '../../shared/db/client.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { allOutboxKeys, deadLetterKey } from '../../shared/redis/keys.ts';
import type { Logger } from '../ops/logger.ts';
import {
  type ApplyOptions,
  ArchiveError,
  applyBatch,
  type ParsedEntry,
  parseEntry,
  type RawEntry,
} from './apply.ts';
import {
  appendDeadLetter,
  type DeadLetterProblem,
  errorText,
  missesMoney,
  summarize,
} from './dead-letters.ts';
import { assertLimits, limits } from './limits.ts';
import type { LedgerWriterMetrics } from './metrics.ts';

export const CONSUMER_GROUP = 'ledger-writer';

export interface LedgerWriterOptions {
  /** A connection of the writer's own: XREADGROUP BLOCK holds it while waiting. */
  redis: Redis;
  sql: Sql;
  prefix: string;
  /** Unique per process (e.g. host + pid); a restarted process's leftovers are claimed after claimIdleMs. */
  consumer: string;
  batchMax: number;
  batchWaitMs: number;
  metrics: LedgerWriterMetrics;
  logger?: Logger;
  /** Defaults to limits.claimIdleMs. */
  claimIdleMs?: number;
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
}

export type WriterState = 'idle' | 'running' | 'retrying' | 'stopping' | 'stopped';

export interface LedgerWriter {
  /** Creates the consumer groups and starts consuming; resolves once consuming. */
  start(): Promise<void>;
  /** Finishes the current batch (or gives up retrying one), then resolves. Nothing unwritten is acked. */
  stop(): Promise<void>;
  readonly state: WriterState;
  /** Age in ms of the oldest unwritten entry, as last sampled. */
  readonly lagMs: number;
}

/** Errors that a retry of the same batch may cure; anything else is the data's fault. */
export function isRetryable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  if (!/^[0-9A-Z]{5}$/.test(code)) return true; // ECONNREFUSED, CONNECTION_CLOSED, CONNECT_TIMEOUT, …
  // 22 data exception and 23 integrity violation are the record's fault; every other class (08
  // connection, 40 conflicts, 42 permissions, 53 resources, 55 lock not available, 57 shutdown or
  // timeout, 58/XX system) is the environment's, and must not dead-letter good entries.
  return !(code.startsWith('22') || code.startsWith('23'));
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
  assertLimits(batchMax, batchWaitMs);
  const group = options.group ?? CONSUMER_GROUP;
  const claimIdleMs = options.claimIdleMs ?? limits.claimIdleMs;
  const lanes = options.lanes ?? limits.applyLanes;
  assert(
    Number.isInteger(lanes) && lanes >= 1 && lanes <= limits.applyLanesMax,
    `lanes must be 1..${limits.applyLanesMax}`,
  );
  const streams = allOutboxKeys(prefix);
  const deadLetter = deadLetterKey(prefix);
  let state: WriterState = 'idle';
  let stopping = false;
  let loop: Promise<void> | null = null;
  let lagMs = 0;
  let lastLagSampleMs = 0;
  let lastClaimMs = 0;
  // Lag and backlog are sampled on a timer too, not only between batches: while one batch is retried
  // (Postgres down) no batch ends, and an alert on the lag must still see it grow.
  let lagTimer: NodeJS.Timeout | null = null;

  async function ensureGroups(): Promise<void> {
    for (const stream of streams) {
      try {
        // From '0': entries appended before the writer ever ran are consumed too.
        await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
      } catch (error) {
        if (!String((error as Error).message).includes('BUSYGROUP')) throw error;
      }
    }
  }

  /**
   * Redis answered NOGROUP: the consumer group is gone, with the streams — Redis restarted without
   * its data (docs/operations.md, "Losing Redis"), or the keys were deleted. Every entry is new to
   * Redis then, and the group is created again from '0', so the entries appended since are written.
   * Without this the writer would retry the failing read (or ack) forever and write nothing again
   * until restarted.
   */
  async function recreateGroupsIfGone(error: unknown): Promise<boolean> {
    if (!String((error as Error | null)?.message).includes('NOGROUP')) return false;
    logger?.error({}, 'ledger writer: the consumer group is gone (Redis lost its data?); creating it again');
    metrics.groupsRecreated.inc();
    await ensureGroups();
    return true;
  }

  async function sampleLag(force = false): Promise<void> {
    const now = Date.now();
    if (!force && now - lastLagSampleMs < limits.lagSampleIntervalMs) return;
    lastLagSampleMs = now;
    const pipeline = redis.pipeline();
    for (const stream of streams) {
      pipeline.xrange(stream, '-', '+', 'COUNT', 1);
      pipeline.xlen(stream);
    }
    pipeline.xlen(deadLetter);
    const replies = (await pipeline.exec()) ?? [];
    const deadLetters = replies.pop();
    if (deadLetters !== undefined && deadLetters[0] === null) metrics.deadLetters.set(Number(deadLetters[1]));
    let oldestMs = Number.POSITIVE_INFINITY;
    let backlog = 0;
    for (let i = 0; i < replies.length; i += 2) {
      const first = replies[i]?.[1] as [string, string[]][] | undefined;
      const id = first?.[0]?.[0];
      if (id !== undefined) oldestMs = Math.min(oldestMs, streamIdMs(id));
      backlog += Number(replies[i + 1]?.[1] ?? 0);
    }
    lagMs = Number.isFinite(oldestMs) ? Math.max(0, now - oldestMs) : 0;
    metrics.lagMs.set(lagMs);
    metrics.backlog.set(backlog);
  }

  /** XACK + XDEL, atomically per stream. Retried until Redis answers (the writes are committed). */
  async function ack(entries: readonly { stream: string; id: string }[]): Promise<void> {
    if (entries.length === 0) return;
    const byStream = new Map<string, string[]>();
    for (const e of entries) {
      const ids = byStream.get(e.stream) ?? [];
      ids.push(e.id);
      byStream.set(e.stream, ids);
    }
    for (let backoff: number = limits.retryBackoffMsMin, attempt = 0; ; attempt++) {
      try {
        const multi = redis.multi();
        for (const [stream, ids] of byStream) {
          multi.xack(stream, group, ...ids);
          multi.xdel(stream, ...ids);
        }
        await multi.exec();
        return;
      } catch (error) {
        // The group went with Redis's data: these entries are gone from Redis too (written, so nothing
        // to ack); the group is recreated for the entries that come after.
        if (await recreateGroupsIfGone(error).catch(() => false)) return;
        // Unacked entries are re-delivered and re-applied as duplicates: safe, so giving up on stop is fine.
        if (stopping && attempt >= 3) return;
        logger?.warn({ err: errorText(error) }, 'ledger writer: ack failed, retrying');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
      }
    }
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

  /** Keeps this consumer's claim fresh while it retries, so XAUTOCLAIM elsewhere does not take it. */
  async function touch(entries: readonly ParsedEntry[]): Promise<void> {
    const byStream = new Map<string, string[]>();
    for (const e of entries) {
      const ids = byStream.get(e.stream) ?? [];
      ids.push(e.id);
      byStream.set(e.stream, ids);
    }
    const pipeline = redis.pipeline();
    for (const [stream, ids] of byStream) pipeline.xclaim(stream, group, consumer, 0, ...ids, 'JUSTID');
    await pipeline.exec().catch(() => undefined);
  }

  /**
   * The ack of the last committed batch, still in flight. Acks run behind the writes: the next batch is
   * applied while this one's XACK + XDEL travel. At most one is outstanding (the next waits for it), and
   * each starts only after its batch's COMMIT resolved, so nothing is acked before it is written.
   */
  let acking: Promise<void> = Promise.resolve();

  async function applyTimed(batch: readonly ParsedEntry[]): Promise<void> {
    const end = metrics.batchDuration.startTimer();
    const result = await applyBatch(sql, batch, options.apply);
    end();
    metrics.batchSize.observe(batch.length);
    // Committed: ack in the background. ack() never rejects (it retries, and gives up only when
    // stopping, which leaves the entries to be re-delivered and found duplicates).
    const previous = acking;
    acking = previous.then(() => ack(batch));
    await previous;
    metrics.entriesWritten.inc({ result: 'applied' }, result.applied);
    metrics.entriesWritten.inc({ result: 'duplicate' }, result.duplicates);
  }

  /** Applies one batch; returns false when it gave up because the writer is stopping. */
  async function applyWithRetry(batch: ParsedEntry[], raws: RawByKey): Promise<boolean> {
    let backoff: number = limits.retryBackoffMsMin;
    let lastTouchMs = Date.now();
    for (;;) {
      try {
        await applyTimed(batch);
        if (state === 'retrying') state = 'running';
        return true;
      } catch (error) {
        if (!isRetryable(error)) {
          metrics.batchFailures.inc({ kind: 'data' });
          logger?.warn(
            { err: errorText(error), size: batch.length },
            'ledger writer: batch failed, isolating',
          );
          return isolate(batch, raws);
        }
        metrics.batchFailures.inc({ kind: 'retryable' });
        if (stopping) return false;
        state = 'retrying';
        logger?.warn(
          { err: errorText(error), backoffMs: backoff },
          'ledger writer: Postgres unavailable, retrying',
        );
        await sleep(backoff);
        backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
        if (Date.now() - lastTouchMs > claimIdleMs / 2) {
          await touch([...batch, ...readAhead]);
          lastTouchMs = Date.now();
        }
      }
    }
  }

  /** Entry by entry, in order, so a poison entry is found and the others are written. */
  async function isolate(batch: ParsedEntry[], raws: RawByKey): Promise<boolean> {
    for (let i = 0; i < batch.length; i++) {
      const entry = batch[i]!;
      for (let attempt = 1; ; attempt++) {
        try {
          await applyTimed([entry]);
          break;
        } catch (error) {
          if (isRetryable(error)) {
            // Not poison after all: the environment failed. Back to whole-batch retries for the rest.
            metrics.batchFailures.inc({ kind: 'retryable' });
            if (stopping) return false;
            await sleep(limits.retryBackoffMsMin);
            return applyWithRetry(batch.slice(i), raws);
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
  async function prepare(read: ReadEntry[]): Promise<Prepared> {
    const deleted: { stream: string; id: string }[] = [];
    const valid: ParsedEntry[] = [];
    const raws: RawByKey = new Map();
    for (const item of read) {
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
    // Stream order across shards: by id time, so one batch is roughly oldest first.
    valid.sort((a, b) => streamIdMs(a.id) - streamIdMs(b.id));
    return { read: read.length, valid, raws };
  }

  /**
   * Applies a prepared read in batches of at most batchMax; false when it gave up because stopping.
   * The entries are split into `lanes` by user, and the lanes are written concurrently, each on its own
   * connection and in stream order within it. Two lanes never touch the same credit account or
   * authorization (both belong to one user), and the natural keys differ, so their transactions do not
   * wait on each other until the audit insert, which every transaction makes last: the chain head is
   * taken in one place, after all other locks, so the lanes cannot deadlock and the chain stays one line.
   * Everything before it — the bulk of the work — runs in parallel.
   */
  async function applyPrepared({ valid, raws }: Prepared): Promise<boolean> {
    // A small read goes in one transaction: split, it would cost two commits for no parallelism gained.
    const laneCount = valid.length < limits.laneSplitEntriesMin ? 1 : lanes;
    const byLane: ParsedEntry[][] = Array.from({ length: laneCount }, () => []);
    for (const entry of valid) byLane[laneOf(entry, laneCount)]!.push(entry);
    const finished = await Promise.all(
      byLane.map(async (lane) => {
        for (let i = 0; i < lane.length; i += batchMax) {
          if (!(await applyWithRetry(lane.slice(i, i + batchMax), raws))) return false;
        }
        return true;
      }),
    );
    return finished.every(Boolean);
  }

  async function readGroup(ids: string, block: boolean, count: number = batchMax) {
    const args: (string | number)[] = ['GROUP', group, consumer, 'COUNT', count];
    if (block) args.push('BLOCK', batchWaitMs);
    args.push('STREAMS', ...streams, ...streams.map(() => ids));
    const reply = (await redis.call('XREADGROUP', ...args)) as unknown[] | null;
    return streamReply(reply).flatMap(([stream, list]) => toEntries(stream, list));
  }

  async function claim() {
    const pipeline = redis.pipeline();
    for (const stream of streams)
      pipeline.xautoclaim(stream, group, consumer, claimIdleMs, '0-0', 'COUNT', batchMax);
    const replies = (await pipeline.exec()) ?? [];
    return replies.flatMap(([error, reply], i) => {
      if (error !== null || !Array.isArray(reply)) return [];
      return toEntries(streams[i]!, reply[1]);
    });
  }

  let ownPendingFirst = true;
  /** Entries read ahead and waiting for the current batch: their claim is kept fresh with it. */
  let readAhead: readonly ParsedEntry[] = [];

  /** The next entries to write: this consumer's own pending ones first, then a dead one's, then new. */
  async function nextRead(): Promise<ReadEntry[]> {
    let read: ReadEntry[] = [];
    if (ownPendingFirst) {
      // Entries delivered to this consumer name but never acked (a restart under the same name).
      read = await readGroup('0', false);
      if (read.length === 0) ownPendingFirst = false;
    }
    if (read.length === 0 && Date.now() - lastClaimMs >= limits.claimIntervalMs) {
      lastClaimMs = Date.now();
      read = await claim();
    }
    if (read.length === 0) {
      read = await readGroup('>', true);
      // A batch is written once it is full or its first entry has waited batchWaitMs: under light load
      // a read returns a few entries, and writing each handful in its own transaction costs more CPU
      // per entry than the entries themselves (and that CPU is taken from the hot path on a shared box).
      if (read.length > 0 && read.length < batchMax && !stopping) {
        await sleep(batchWaitMs);
        // If this second read fails, write what the first one delivered (it is this consumer's now).
        read = read.concat(await readGroup('>', false, batchMax - read.length).catch(() => []));
      }
    }
    return read;
  }

  /**
   * The loop reads and validates the next entries while the current ones are written (one read ahead,
   * never more), and acks behind the writes (see applyTimed). A read ahead only ever asks for new
   * entries ('>') or a dead consumer's: re-reading this consumer's own pending list ('0') would return
   * the entries still being written, so while that list is being drained there is no read ahead.
   */
  async function run(): Promise<void> {
    let backoff: number = limits.retryBackoffMsMin;
    let ahead: Promise<Prepared> | null = null;
    while (!stopping || ahead !== null) {
      try {
        const source = ahead;
        ahead = null;
        const current: Prepared = await (source ?? nextRead().then(prepare));
        readAhead = [];
        if (current.valid.length > 0 && !stopping && !ownPendingFirst) {
          ahead = nextRead()
            .then(prepare)
            .then((prepared) => {
              readAhead = prepared.valid;
              return prepared;
            });
          // Observed now so a failure is not an unhandled rejection; it is rethrown when awaited.
          ahead.catch(() => undefined);
        }
        const finished = await applyPrepared(current);
        await sampleLag(current.read === 0);
        backoff = limits.retryBackoffMsMin;
        if (!finished) break;
      } catch (error) {
        if (await recreateGroupsIfGone(error).catch(() => false)) {
          ownPendingFirst = true;
          continue;
        }
        // Redis unreachable (Postgres failures are retried inside applyPrepared): wait and go on.
        logger?.warn({ err: errorText(error) }, 'ledger writer: read failed, retrying');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
      }
    }
    // Entries read ahead but not written (stopping while a batch kept failing) stay pending for this
    // consumer: a restart under the same name, or another writer after claimIdleMs, writes them.
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
    async start() {
      if (loop !== null) return;
      await ensureGroups();
      state = 'running';
      lagTimer = setInterval(() => {
        sampleLag().catch(() => undefined); // Redis away: the next sample tries again
      }, limits.lagSampleIntervalMs);
      lagTimer.unref();
      loop = run().finally(() => {
        state = 'stopped';
      });
    },
    async stop() {
      stopping = true;
      if (lagTimer !== null) clearInterval(lagTimer);
      if (state !== 'stopped') state = 'stopping';
      await loop;
      state = 'stopped';
    },
  };
}
