/**
 * Which ledger writer consumes which outbox shard (docs/redis-layout.md, "Writers sharing the shards").
 *
 * A consumer group alone would hand the entries of one stream to several consumers and lose their
 * order, so a shard is consumed by one writer at a time, its *owner*:
 * - **Lease (Redis).** The owner holds `<prefix>{s:NNN}:writer` = its writer id, with a TTL of
 *   `leaseMs`, renewed every `leaseMs / 4`. The key is in the shard's slot, so every command is
 *   single-slot on a Redis Cluster. A writer whose renewal is refused (the key names someone else, or
 *   is gone), or that could not renew for `leaseMs`, stops reading the shard at once.
 * - **Balance.** Each writer keeps a heartbeat in the ZSET `<prefix>ledger-writers` (score = expiry);
 *   the live writers' count gives each a share, ceil(shards / writers). A writer below its share takes
 *   free shards (SET NX), one above it releases the excess. A writer killed with -9 stops renewing: its
 *   leases expire after `leaseMs` and the others take its shards within `leaseMs + leaseMs / 4`.
 * - **Fence (Postgres).** A lease alone cannot stop a writer that was paused (SIGSTOP, a long GC, a
 *   VM migration) past its lease and then resumes mid-batch. So taking a shard over raises its epoch in
 *   `ledger_stream_fences` (Postgres; kept when this writer was its last owner), and every transaction
 *   the writer commits for the shard first reads that row `for share` and checks the epoch it took the
 *   shard at. The raise (an UPDATE) waits
 *   for the old owner's open transactions, which hold the row `for share`; a transaction of the old
 *   owner that starts after it sees the new epoch and rolls back (FencedError). So the old owner's
 *   writes all come before the new owner's, whatever the clocks. A paused owner's open transaction is
 *   ended by the server after `leaseMs` idle (`idle_in_transaction_session_timeout`, set per
 *   transaction), so it cannot hold a takeover up for longer.
 * - **Claim.** A new owner first claims every entry pending in the shard's group, whoever it was
 *   delivered to (XAUTOCLAIM from 0-0, min idle 0: the old owner is fenced, so nothing is taken from a
 *   writer that could still commit it), and writes them, in stream order, before it reads new ones.
 *
 * It is an invariant that a shard's entries are committed by one owner at a time, in stream order per
 * user, and that an owner commits nothing after a later owner raised the shard's epoch.
 */
import type { Sql, Tx } from '../shared/db/client.ts';
import { replyCode } from '../shared/errors.ts';
import type { Logger } from '../shared/observability/logger.ts';
import { errorText } from '../shared/outbox/dead-letters.ts';
import type { Redis } from '../shared/redis/client.ts';
import { outboxKey, shardLeaseKey, writersKey } from '../shared/redis/keys.ts';
import { luaScript, runScript } from '../shared/redis/script.ts';
import { limits } from './limits.ts';
import type { LedgerWriterMetrics } from './metrics.ts';
import { FencedError } from './write-batch.ts';

const RENEW = luaScript(
  "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0",
);
const RELEASE = luaScript(
  "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
);

export interface OwnedShard {
  shard: number;
  stream: string;
  /** Its lease key (`<prefix>{s:NNN}:writer`): every read checks it names this writer (stream-read.ts). */
  leaseKey: string;
  /** The fencing epoch this writer took the shard at; checked by every transaction. */
  epoch: bigint;
  /** XAUTOCLAIM cursor while the shard's pending entries are being claimed; null once all are. */
  claimCursor: string | null;
  /** Local time until which the lease is known to be held (the last renewal's send time + leaseMs). */
  validUntilMs: number;
  /** Adaptive polling: the wait before the next read, and when it is due. */
  pollMs: number;
  nextPollAtMs: number;
}

export interface ShardOwnershipOptions {
  redis: Redis;
  sql: Sql;
  prefix: string;
  /** Unique per writer instance (its lease value and heartbeat member). */
  writerId: string;
  group: string;
  /** The consumer name the writer reads and claims under. */
  consumer: string;
  leaseMs: number;
  shardCount: number;
  metrics: LedgerWriterMetrics;
  logger?: Logger | undefined;
}

export type ShardOwnership = ReturnType<typeof createShardOwnership>;

/** The epoch check every transaction of the writer makes first (see the header). */
export async function checkFence(
  tx: Tx,
  epochs: ReadonlyMap<string, bigint>,
  idleInTransactionMs: number,
): Promise<void> {
  const streams = [...epochs.keys()];
  if (streams.length === 0) return;
  const [, rows] = await Promise.all([
    tx`select set_config('idle_in_transaction_session_timeout', ${String(idleInTransactionMs)}, true)`,
    tx<{ stream: string }[]>`
      select f.stream from ledger_stream_fences f
      join unnest(${streams}::text[], ${[...epochs.values()].map(String)}::bigint[]) as m(stream, epoch)
        on f.stream = m.stream and f.epoch = m.epoch
      for share of f`,
  ]);
  if (rows.length === streams.length) return;
  const current = new Set(rows.map((row) => row.stream));
  throw new FencedError(streams.filter((stream) => !current.has(stream)));
}

type DropReason = 'lease_lost' | 'lease_expired' | 'fenced' | 'released';

/** What the pieces of one writer's ownership share: its options, its shards, and how it lets one go. */
interface Ownership {
  options: ShardOwnershipOptions;
  owned: Map<number, OwnedShard>;
  order: readonly number[];
  setGauge(): void;
  drop(shard: number, reason: DropReason): void;
  release(shard: number): Promise<void>;
}

export function createShardOwnership(options: ShardOwnershipOptions) {
  const { redis, prefix, writerId, shardCount, metrics, logger } = options;
  const owned = new Map<number, OwnedShard>();
  /** Each writer tries free shards in its own order (rendezvous), so writers rarely race for one. */
  const order = Array.from({ length: shardCount }, (_, shard) => shard).sort(
    (a, b) => rank(writerId, a) - rank(writerId, b),
  );

  function setGauge(): void {
    metrics.shardsOwned.set(owned.size);
  }

  function drop(shard: number, reason: DropReason): void {
    if (!owned.delete(shard)) return;
    metrics.shardsLost.inc({ reason });
    setGauge();
    if (reason !== 'released')
      logger?.warn({ shard, reason }, 'ledger writer: lost an outbox shard; its new owner writes it');
  }

  async function release(shard: number): Promise<void> {
    drop(shard, 'released');
    await runScript(redis, RELEASE, [shardLeaseKey(prefix, shard)], [writerId]).catch(() => undefined);
  }

  const ownership: Ownership = { options, owned, order, setGauge, drop, release };

  let maintaining: Promise<void> | null = null;
  /** One renewal and balance round; never two at once. */
  function maintain(): Promise<void> {
    maintaining ??= (async () => {
      try {
        await renew(ownership);
        await balance(ownership);
      } catch (error) {
        logger?.warn({ err: errorText(error) }, 'ledger writer: shard balance failed, retrying');
      } finally {
        maintaining = null;
      }
    })();
    return maintaining;
  }

  return {
    owned,
    maintain,
    /** The owned shard of `stream`, if still owned at `epoch`. */
    at(stream: string, epoch: bigint): OwnedShard | undefined {
      for (const shard of owned.values()) if (shard.stream === stream && shard.epoch === epoch) return shard;
      return undefined;
    },
    /** A transaction found these streams fenced: another writer owns them now. */
    fenced(streams: readonly string[], epochs: ReadonlyMap<string, bigint>): void {
      metrics.fencedBatches.inc();
      for (const stream of streams) {
        const shard = [...owned.values()].find((s) => s.stream === stream);
        if (shard !== undefined && shard.epoch === epochs.get(stream)) drop(shard.shard, 'fenced');
      }
    },
    /** A read found the shard's lease no longer this writer's (stream-read.ts): it reads it no more. */
    lost(shard: OwnedShard): void {
      if (owned.get(shard.shard) === shard) drop(shard.shard, 'lease_lost');
    },
    /** Whether a shard may be read now (owned, lease valid). */
    readable(shard: OwnedShard, nowMs: number): boolean {
      if (owned.get(shard.shard) !== shard) return false;
      if (nowMs < shard.validUntilMs) return true;
      drop(shard.shard, 'lease_expired');
      return false;
    },
    /** Lets every shard go (a clean stop): the others take them at once, without waiting for the lease. */
    async releaseAll(): Promise<void> {
      await maintaining;
      await Promise.all([...owned.keys()].map(release));
      await redis.zrem(writersKey(prefix), writerId).catch(() => undefined);
    },
  };
}

/**
 * Takes free shards: their leases (SET NX), then their fences in one Postgres transaction (epoch + 1;
 * a fence row still locked by an old owner's open transaction is skipped, its lease let go, and tried
 * again next round), then their groups. Taking back a shard no other writer held since (its lease
 * lapsed, or Redis lost it) keeps the epoch: this writer's batches in hand are still its own to
 * commit (Redis may have lost their only other copy), and no other writer wrote in between; last a renewal, so a slow takeover does not start on a lease
 * that lapsed meanwhile. Returns how many it took.
 */
async function acquire(ownership: Ownership, shards: readonly number[]): Promise<number> {
  const { options, owned, setGauge } = ownership;
  const { redis, sql, prefix, writerId, group, leaseMs, metrics, logger } = options;
  const leased = (
    await Promise.all(
      shards.map(async (shard) =>
        (await redis.set(shardLeaseKey(prefix, shard), writerId, 'PX', leaseMs, 'NX')) === 'OK'
          ? shard
          : null,
      ),
    )
  ).filter((shard): shard is number => shard !== null);
  if (leased.length === 0) return 0;
  const letGo = (list: readonly number[]) =>
    Promise.all(
      list.map((shard) =>
        runScript(redis, RELEASE, [shardLeaseKey(prefix, shard)], [writerId]).catch(() => undefined),
      ),
    );
  const streams = leased.map((shard) => outboxKey(prefix, shard));
  let raised: Raised[];
  try {
    raised = await raiseFences(sql, writerId, streams);
  } catch (error) {
    // Postgres unreachable: a shard is never consumed without its fence raised. Let them go.
    logger?.warn({ err: errorText(error) }, 'ledger writer: could not take shards over');
    await letGo(leased);
    return 0;
  }
  const byStream = new Map(raised.map((row) => [row.stream, row]));
  await letGo(leased.filter((shard) => !byStream.has(outboxKey(prefix, shard))));
  let taken = 0;
  await Promise.all(
    leased.map(async (shard) => {
      const stream = outboxKey(prefix, shard);
      const row = byStream.get(stream);
      if (row === undefined) return;
      try {
        await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
      } catch (error) {
        if (replyCode(error) !== 'BUSYGROUP') {
          await letGo([shard]);
          return;
        }
      }
      const renewedMs = Date.now();
      const renewed = await runScript<number>(
        redis,
        RENEW,
        [shardLeaseKey(prefix, shard)],
        [writerId, leaseMs],
      ).catch(() => 0);
      // Lapsed and taken by another writer meanwhile: that writer raised the fence after this one.
      if (renewed !== 1) return;
      owned.set(shard, {
        shard,
        stream,
        leaseKey: shardLeaseKey(prefix, shard),
        epoch: BigInt(row.epoch),
        claimCursor: '0-0',
        validUntilMs: renewedMs + leaseMs,
        pollMs: 0,
        nextPollAtMs: 0,
      });
      metrics.shardsAcquired.inc({
        from: row.previous === null ? 'new' : row.previous === writerId ? 'self' : 'writer',
      });
      taken++;
    }),
  );
  setGauge();
  return taken;
}

type Raised = { stream: string; epoch: string; previous: string | null };

/**
 * In one transaction, raises the fences of `streams` this writer may take: epoch + 1, or kept when this
 * writer was the last owner. A fence row still locked by an old owner's open transaction is skipped.
 */
async function raiseFences(sql: Sql, writerId: string, streams: readonly string[]): Promise<Raised[]> {
  return sql.begin(async (tx): Promise<Raised[]> => {
    const free = await tx<{ stream: string }[]>`
      select stream from ledger_stream_fences where stream = any(${streams}::text[]) for update skip locked`;
    const existing = await tx<{ stream: string }[]>`
      select stream from ledger_stream_fences where stream = any(${streams}::text[])`;
    const freeSet = new Set(free.map((row) => row.stream));
    const busy = new Set(existing.map((row) => row.stream).filter((stream) => !freeSet.has(stream)));
    const takeable = streams.filter((stream) => !busy.has(stream));
    if (takeable.length === 0) return [];
    return tx<Raised[]>`
      with previous as (
        select stream, owner from ledger_stream_fences where stream = any(${takeable}::text[])
      )
      insert into ledger_stream_fences as f (stream, epoch, owner)
      select unnest(${takeable}::text[]), 1, ${writerId}
      on conflict (stream) do update
        set epoch = case when f.owner = excluded.owner then f.epoch else f.epoch + 1 end,
          owner = excluded.owner, taken_at = now()
      returning f.stream, f.epoch::text as epoch,
        (select p.owner from previous p where p.stream = f.stream) as previous`;
  });
}

/** Renews every lease; drops a shard whose lease is gone or could not be renewed in time. */
async function renew(ownership: Ownership): Promise<void> {
  const { options, owned, drop } = ownership;
  const { redis, prefix, writerId, leaseMs } = options;
  const sentMs = Date.now();
  await Promise.all(
    [...owned.values()].map(async (shard) => {
      try {
        const renewed = await runScript<number>(
          redis,
          RENEW,
          [shardLeaseKey(prefix, shard.shard)],
          [writerId, leaseMs],
        );
        if (owned.get(shard.shard) !== shard) return;
        if (renewed === 1) shard.validUntilMs = sentMs + leaseMs;
        else drop(shard.shard, 'lease_lost');
      } catch {
        // Whatever failed, the lease is only as good as its last renewal: past it the shard is
        // dropped (the safe side), and the next round tries again.
        if (Date.now() >= shard.validUntilMs) drop(shard.shard, 'lease_expired');
      }
    }),
  );
}

/** Heartbeat, then take free shards up to this writer's share or release those above it. */
async function balance(ownership: Ownership): Promise<void> {
  const { options, owned, order, release } = ownership;
  const { redis, prefix, writerId, leaseMs, shardCount } = options;
  const now = Date.now();
  const key = writersKey(prefix);
  const [, , [, live] = []] =
    (await redis
      .multi()
      .zadd(key, now + leaseMs, writerId)
      .zremrangebyscore(key, '-inf', now)
      .zcard(key)
      .exec()) ?? [];
  const share = Math.ceil(shardCount / Math.max(1, Number(live ?? 1)));
  if (owned.size > share) {
    const excess = [...owned.keys()].sort((a, b) => rank(writerId, b) - rank(writerId, a));
    for (const shard of excess.slice(0, owned.size - share)) await release(shard);
    return;
  }
  for (let i = 0; i < order.length && owned.size < share; i += limits.shardAcquireConcurrency) {
    const candidates = order
      .slice(i, i + limits.shardAcquireConcurrency)
      .filter((shard) => !owned.has(shard));
    // Which are free (one EXISTS each: a shard's own slot), then take as many as this writer lacks.
    const held = await Promise.all(candidates.map((shard) => redis.exists(shardLeaseKey(prefix, shard))));
    const free = candidates.filter((_, j) => held[j] === 0);
    if (free.length > 0) await acquire(ownership, free.slice(0, share - owned.size));
  }
}

/** Rendezvous weight of (writer, shard): FNV-1a of both, so each writer has its own shard order. */
function rank(writerId: string, shard: number): number {
  const key = `${writerId}/${shard}`;
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}
