/**
 * The ledger writer: drains the hot path's outbox streams (one per shard, shared/redis/keys.ts) into
 * Postgres through one consumer group. Several writers share the shards: each shard is owned by one
 * writer at a time, with a lease in Redis and a fence in Postgres (shards.ts), so its entries are
 * written in order; a dead writer's shards are taken over, its pending entries claimed and written first.
 *
 * Loop: read the owned shards (one XREADGROUP per shard, no BLOCK: every command names one stream, so
 * one slot on a Redis Cluster; a shard just taken over is first drained of its pending entries with
 * XAUTOCLAIM; a shard that had nothing is polled again after a wait that doubles from batchWaitMs up to
 * limits.idlePollMsMax, one whose read was full at once, one that had fewer after half its wait; a read that is not full waits batchWaitMs once
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
import type { Logger } from '../shared/observability/logger.ts';
import { errorText } from '../shared/outbox/dead-letters.ts';
import type { Redis } from '../shared/redis/client.ts';
import { OUTBOX_SHARDS } from '../shared/redis/keys.ts';
import { createAcker } from './ack.ts';
import { createBatchWriter } from './batch-write.ts';
import { createLagSampler } from './lag.ts';
import { createLaneWriter, type Prepared } from './lanes.ts';
import { assertLimits, limits } from './limits.ts';
import type { LedgerWriterMetrics } from './metrics.ts';
import { prepareRead } from './prepare-read.ts';
import { createShardOwnership } from './shards.ts';
import { createStreamReader, type Read } from './stream-read.ts';
import type { ApplyOptions } from './write-batch.ts';

// The pieces' own modules: stream-read.ts (the stream consumer), prepare-read.ts (validation),
// lanes.ts (lanes), batch-write.ts (batch write, retry, poison isolation), ack.ts (ack and dead
// letters), lag.ts (lag and backlog), shards.ts (shard ownership and fences).
export { isRetryable } from './batch-write.ts';
export { laneOf } from './lanes.ts';
export { streamIdMs, streamReply } from './stream-read.ts';

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

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The options with their defaults applied and checked (programmer errors crash here, at start-up). */
function resolveOptions(options: LedgerWriterOptions) {
  const { batchMax, batchWaitMs } = options;
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
  return { leaseMs, group, lanes, shardCount };
}

export function createLedgerWriter(options: LedgerWriterOptions): LedgerWriter {
  const { redis, sql, prefix, consumer, batchMax, batchWaitMs, metrics, logger } = options;
  const { leaseMs, group, lanes, shardCount } = resolveOptions(options);
  const writerId = `${consumer}/${randomBytes(4).toString('hex')}`;
  const ownership = createShardOwnership({
    redis,
    sql,
    prefix,
    writerId,
    group,
    consumer,
    leaseMs,
    shardCount,
    metrics,
    logger,
  });
  // The writer's run state, shared with the pieces that read `stopping` or move `state`.
  const status: { state: WriterState; stopping: boolean } = { state: 'idle', stopping: false };
  const isStopping = () => status.stopping;
  let loop: Promise<void> | null = null;
  // Lag and backlog are sampled on a timer too, not only between batches: while one batch is retried
  // (Postgres down) no batch ends, and an alert on the lag must still see it grow.
  let lagTimer: NodeJS.Timeout | null = null;
  let maintainTimer: NodeJS.Timeout | null = null;
  const reader = createStreamReader({
    redis,
    group,
    consumer,
    writerId,
    batchMax,
    batchWaitMs,
    metrics,
    logger,
    ownership,
    isStopping,
  });
  const acker = createAcker({
    redis,
    prefix,
    group,
    metrics,
    logger,
    isStopping,
    recreateGroupIfGone: reader.recreateGroupIfGone,
  });
  const { applyWithRetry } = createBatchWriter({
    sql,
    leaseMs,
    apply: options.apply,
    metrics,
    logger,
    ownership,
    status,
    deadLetterEntry: acker.deadLetterEntry,
  });
  const { applyPrepared } = createLaneWriter({ lanes, batchMax, applyWithRetry, ackBehind: acker.ackBehind });
  const lag = createLagSampler({ redis, prefix, metrics, ownership });
  const prepare = (read: Read): Promise<Prepared> => prepareRead(read, acker);
  const run = () =>
    runLoop({
      status,
      nextRead: reader.nextRead,
      prepare,
      applyPrepared,
      sampleLag: lag.sampleLag,
      acker,
      logger,
    });

  return {
    get state() {
      return status.state;
    },
    get lagMs() {
      return lag.lagMs;
    },
    get shards() {
      return [...ownership.owned.keys()].sort((a, b) => a - b);
    },
    async start() {
      if (loop !== null) return;
      // Takes this writer's share of the free shards before consuming; more come with the timer.
      await ownership.maintain();
      status.state = 'running';
      lagTimer = setInterval(() => {
        lag.sampleLag().catch(() => undefined); // Redis away: the next sample tries again
      }, limits.lagSampleIntervalMs);
      lagTimer.unref();
      maintainTimer = setInterval(() => {
        ownership.maintain().catch(() => undefined); // logged inside; the next round tries again
      }, leaseMs / 4);
      maintainTimer.unref();
      loop = run().finally(() => {
        status.state = 'stopped';
      });
    },
    async stop() {
      status.stopping = true;
      if (lagTimer !== null) clearInterval(lagTimer);
      if (maintainTimer !== null) clearInterval(maintainTimer);
      if (status.state !== 'stopped') status.state = 'stopping';
      await loop;
      // Written and acked what it could: its shards go to the others at once, not after the lease.
      await ownership.releaseAll();
      status.state = 'stopped';
    },
  };
}

/**
 * The loop reads and validates the next entries while the current ones are written (one read ahead,
 * never more), and acks behind the writes (see ack.ts). A shard is never read twice over the same
 * entries: new ones come from '>', a taken-over shard's pending ones from an XAUTOCLAIM cursor.
 */
async function runLoop(deps: {
  status: { stopping: boolean };
  nextRead: () => Promise<Read>;
  prepare: (read: Read) => Promise<Prepared>;
  applyPrepared: (prepared: Prepared) => Promise<boolean>;
  sampleLag: (force?: boolean) => Promise<void>;
  acker: { settled: () => Promise<void> };
  logger?: Logger | undefined;
}): Promise<void> {
  const { status, nextRead, prepare, applyPrepared, sampleLag, logger } = deps;
  let backoff: number = limits.retryBackoffMsMin;
  let ahead: Promise<Prepared> | null = null;
  while (!status.stopping || ahead !== null) {
    try {
      const source = ahead;
      ahead = null;
      const current: Prepared = await (source ?? nextRead().then(prepare));
      if (current.valid.length > 0 && !status.stopping) {
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
  await deps.acker.settled();
}
