/**
 * Who may decide, and from where: the fence between the Redis decider and the Postgres fallback.
 *
 * Two deciders must never grant against the same credit (ARCHITECTURE.md invariant 7). Redis decisions
 * and Postgres fallback decisions cannot see each other directly — a process falls back precisely
 * because it cannot reach Redis — so they are fenced through Postgres:
 *
 * - Every hot-path process that decides from Redis holds a *lease* in `redis_deciders`, renewed every
 *   quarter of `REDIS_DECIDER_LEASE_MS` while Redis answers it. The process counts its lease as valid
 *   until (time it sent the renewal + lease length) by its own monotonic clock, which ends no later
 *   than the expiry Postgres stored, so it never believes in a lease others already see as expired.
 * - The Postgres fallback grants only while no *other* process holds a live lease (checked under a
 *   shared advisory lock, in the fallback's transaction). With a healthy peer deciding from Redis, a
 *   process cut off from Redis declines instead of granting the same credit a second time.
 * - A process (re)acquires its lease under the exclusive form of that lock and then, before it decides
 *   from Redis again, adopts every fallback decision not yet in the cache (`fallback_decisions`, durable,
 *   written in the fallback's transaction). So every Redis decision after an outage sees every grant the
 *   fallback made during it, whichever process made them and whether or not it is still alive.
 * - After a Redis attempt fails, the process is *suspect*: it decides from Postgres (fenced as above)
 *   until a catch-up has found Redis answering and adopted the pending decisions.
 *
 * What is left (docs/hot-path.md, "Known windows"): a process that can reach Redis but not Postgres
 * keeps deciding from Redis without renewing its lease (a Postgres outage must not stop the hot path);
 * if at that same time another process can reach Postgres but not Redis (a double partition), the
 * fallback may grant beside it, bounded per user by FALLBACK_GRANT_CENTS_MAX.
 */
import { hostname } from 'node:os';
import type { Sql } from '../../shared/db/client.ts';
import { withDeadline } from '../../shared/deadline.ts';
import {
  adoptGrant,
  type FallbackGrant,
  grantOfRow,
  type PendingRow,
} from '../../shared/lifecycle/adoption.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { clusterRedirectOf } from '../../shared/redis/script.ts';
import { limits } from '../limits.ts';

/** The advisory lock that orders lease acquisitions (exclusive) against fallback grants (shared). */
export const DECIDER_LOCK_KEY = 7_431_015;

export interface RedisLeaseDeps {
  sql: Sql;
  redis: Redis;
  prefix: string;
  leaseMs: number;
  /** Unique per process and engine; defaults to host, pid and a random part. */
  holder?: string;
  onEvent?: (event: LeaseEvent) => void;
}

export type LeaseEvent =
  | { kind: 'caught_up'; adopted: number; postgres: boolean }
  | { kind: 'catch_up_failed'; stage: 'redis' | 'adopt'; error: unknown }
  | { kind: 'postgres_unreachable'; error: unknown };

export interface RedisLease {
  readonly holder: string;
  /** True when a decision may be made from Redis now without catching up first. */
  mayDecide(): boolean;
  /** True after a Redis attempt failed and no catch-up has succeeded since. */
  suspect(): boolean;
  /** A Redis attempt succeeded: Redis answers, so the next renewal needs no PING of its own. */
  noteRedisOk(): void;
  /** A Redis attempt failed: decide from Postgres until a catch-up succeeds (one starts now). */
  markSuspect(): void;
  /** Renews (or re-acquires) the lease and adopts pending fallback decisions; one at a time. */
  catchUp(): Promise<boolean>;
  /** Remembers a grant this process made, so it is adopted even while Postgres is unreachable. */
  remember(grant: FallbackGrant): void;
  /** Adopts this process's own pending grants of one user (before a Redis decision for that user). */
  adoptOwn(userId: string): Promise<number>;
  /** Starts the renewal timer. */
  start(): void;
  /** Stops renewing and gives the lease up, so the fallback of other processes is not held back. */
  stop(): Promise<void>;
}

export function createRedisLease(deps: RedisLeaseDeps): RedisLease {
  const { sql, redis, prefix, leaseMs } = deps;
  const holder = deps.holder ?? `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 10)}`;
  const emit = deps.onEvent ?? (() => {});
  const renewTimeoutMs = Math.max(50, Math.floor(leaseMs / 4));
  const state: LeaseState = {
    validUntil: 0,
    redisOkAt: Number.NEGATIVE_INFINITY,
    isSuspect: false,
    postgresUnreachable: false,
    releasing: Promise.resolve(),
    adoptedUnmarked: [],
  };
  let flight: Promise<boolean> | null = null;
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const own = createOwnGrants();

  // On a Redis Cluster a grant's slot may be mid-migration: its adoption waits that out for up to a
  // renewal's time (docs/redis-layout.md, "Moving slots under traffic"); adopting is idempotent.
  const adopt = (grant: FallbackGrant) =>
    adoptGrant(redis, prefix, grant, {
      retriesMax: limits.clusterScriptRetriesMax,
      tryAgainDelayMs: limits.clusterTryAgainDelayMs,
      deadlineMs: Date.now() + renewTimeoutMs,
    });
  const catchUpContext: CatchUpContext = {
    sql,
    redis,
    holder,
    leaseMs,
    renewTimeoutMs,
    emit,
    state,
    own,
    adopt,
  };

  function catchUp(): Promise<boolean> {
    if (flight === null) {
      flight = runCatchUp(catchUpContext).finally(() => {
        flight = null;
      });
    }
    return flight;
  }

  return {
    holder,
    mayDecide: () => !state.isSuspect && (state.postgresUnreachable || performance.now() < state.validUntil),
    suspect: () => state.isSuspect,
    noteRedisOk() {
      state.redisOkAt = performance.now();
    },
    markSuspect() {
      if (!state.isSuspect) {
        // Give the lease up at once: while this process cannot reach Redis it decides nothing there,
        // and its lease would hold back the fallback of every other process until it expired.
        state.validUntil = 0;
        state.releasing = sql`delete from redis_deciders where holder = ${holder}`.catch(() => {});
      }
      state.isSuspect = true;
      catchUp().catch(() => {});
    },
    catchUp,
    remember: own.remember,
    async adoptOwn(userId) {
      const ids = own.idsOf(userId);
      if (ids === undefined) return 0;
      let trips = 0;
      for (const id of [...ids]) {
        const grant = own.get(id);
        if (grant === undefined) continue;
        await adopt(grant);
        trips++;
        own.forget(id);
        state.adoptedUnmarked.push(id);
      }
      return trips;
    },
    start() {
      if (timer !== null) return;
      timer = setInterval(
        () => {
          if (!stopped) catchUp().catch(() => {});
        },
        Math.max(50, Math.floor(leaseMs / 4)),
      );
      timer.unref();
    },
    async stop() {
      stopped = true;
      if (timer !== null) clearInterval(timer);
      timer = null;
      await flight?.catch(() => false);
      state.validUntil = 0;
      await sql`delete from redis_deciders where holder = ${holder}`.catch(() => {});
    },
  };
}

/** What a lease knows between catch-ups; the catch-up and the engine's calls both change it. */
interface LeaseState {
  /** performance.now() time until which the lease is valid by this process's clock. */
  validUntil: number;
  /** performance.now() time of the last Redis answer. */
  redisOkAt: number;
  isSuspect: boolean;
  postgresUnreachable: boolean;
  /**
   * The removal of our lease row after a Redis failure; a renewal waits for it, so a late delete can
   * never remove a lease renewed after it.
   */
  releasing: Promise<unknown>;
  /** Own grants adopted into Redis and not yet marked adopted in Postgres (the next renewal marks them). */
  adoptedUnmarked: string[];
}

/**
 * Grants this process made, until adopted: what it can adopt without Postgres. By user too, so a
 * Redis decision for a user first adopts that user's grants (one lookup when there are none).
 */
function createOwnGrants() {
  const own = new Map<string, FallbackGrant>();
  const ownByUser = new Map<string, Set<string>>();
  return {
    get: (decisionId: string) => own.get(decisionId),
    all: () => [...own.values()],
    idsOf: (userId: string) => ownByUser.get(userId),
    remember(grant: FallbackGrant) {
      if (own.size >= limits.ownGrantsMax) return;
      own.set(grant.decisionId, grant);
      const ids = ownByUser.get(grant.userId) ?? new Set<string>();
      ids.add(grant.decisionId);
      ownByUser.set(grant.userId, ids);
    },
    forget(decisionId: string) {
      const grant = own.get(decisionId);
      if (grant === undefined) return;
      own.delete(decisionId);
      const ids = ownByUser.get(grant.userId);
      ids?.delete(decisionId);
      if (ids?.size === 0) ownByUser.delete(grant.userId);
    },
  };
}

type OwnGrants = ReturnType<typeof createOwnGrants>;

/** Everything one catch-up reads and changes. */
interface CatchUpContext {
  sql: Sql;
  redis: Redis;
  holder: string;
  leaseMs: number;
  renewTimeoutMs: number;
  emit: (event: LeaseEvent) => void;
  state: LeaseState;
  own: OwnGrants;
  adopt: (grant: FallbackGrant) => Promise<unknown>;
}

/** One catch-up: Redis answers and our own grants are adopted, then the lease is renewed in Postgres. */
async function runCatchUp(ctx: CatchUpContext): Promise<boolean> {
  const { sql, redis, leaseMs, renewTimeoutMs, emit, state, own, adopt } = ctx;
  // Redis first: a lease says "I can decide from Redis", so it is only renewed while Redis answers.
  const adoptedOwn: string[] = state.adoptedUnmarked;
  state.adoptedUnmarked = [];
  try {
    if (state.isSuspect || performance.now() - state.redisOkAt > leaseMs / 4) await redis.ping();
    state.redisOkAt = performance.now();
    // Our own grants first: adopting them needs no Postgres. One whose slot is being moved stays
    // remembered (a redirect is not Redis away): it is adopted before its user's next Redis decision
    // (adoptOwn) or by a later catch-up.
    for (const grant of own.all()) {
      try {
        await adopt(grant);
      } catch (error) {
        if (clusterRedirectOf(error) !== null) continue;
        throw error;
      }
      adoptedOwn.push(grant.decisionId);
      own.forget(grant.decisionId);
    }
  } catch (error) {
    state.adoptedUnmarked.push(...adoptedOwn);
    state.isSuspect = true;
    emit({ kind: 'catch_up_failed', stage: 'redis', error });
    return false;
  }
  const acquire = performance.now() >= state.validUntil;
  let sentAt: number;
  let adopted = adoptedOwn.length;
  try {
    // Bounded by a quarter lease: a Postgres that hangs (rather than refuses) is found unreachable
    // before the lease runs out, so the Redis path keeps deciding through a Postgres outage.
    const renewed = await withDeadline(
      (async () => {
        await state.releasing;
        const at = await renewInPostgres(sql, ctx.holder, leaseMs, acquire);
        if (adoptedOwn.length > 0)
          await sql`update fallback_decisions set adopted_at = now() where decision_id = any(${adoptedOwn}::text[])`;
        return { at, adopted: acquire ? await adoptPendingFromPostgres(ctx) : 0 };
      })(),
      renewTimeoutMs,
    );
    sentAt = renewed.at;
    adopted += renewed.adopted;
  } catch (error) {
    state.adoptedUnmarked.push(...adoptedOwn);
    if (error instanceof AdoptError) {
      state.isSuspect = true;
      emit({ kind: 'catch_up_failed', stage: 'adopt', error: error.cause });
      return false;
    }
    // Postgres is unreachable: no fallback can grant through it either, except across a double
    // partition (see the module comment). Keep deciding from Redis rather than stopping the hot path.
    state.postgresUnreachable = true;
    state.isSuspect = false;
    emit({ kind: 'postgres_unreachable', error });
    return true;
  }
  state.validUntil = sentAt + leaseMs;
  state.postgresUnreachable = false;
  state.isSuspect = false;
  if (acquire || adopted > 0) emit({ kind: 'caught_up', adopted, postgres: true });
  return true;
}

/** Renews (or, under the exclusive lock, acquires) the lease row; returns when the renewal was sent. */
async function renewInPostgres(sql: Sql, holder: string, leaseMs: number, acquire: boolean): Promise<number> {
  const sentAt = performance.now();
  if (!acquire) {
    await sql`insert into redis_deciders (holder, expires_at, renewed_at)
      values (${holder}, clock_timestamp() + ${`${leaseMs} milliseconds`}::interval, now())
      on conflict (holder) do update set expires_at = excluded.expires_at, renewed_at = excluded.renewed_at`;
    return sentAt;
  }
  // Acquisition waits for every fallback transaction in flight (they hold the lock shared) and is
  // seen by every one that starts after it: a grant is either committed before (and adopted below)
  // or refused because of this lease.
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${DECIDER_LOCK_KEY})`;
    await tx`insert into redis_deciders (holder, expires_at, renewed_at)
      values (${holder}, clock_timestamp() + ${`${leaseMs} milliseconds`}::interval, now())
      on conflict (holder) do update set expires_at = excluded.expires_at, renewed_at = excluded.renewed_at`;
  });
  return sentAt;
}

/** Adopts every fallback decision Postgres holds as not yet adopted, in batches; returns how many. */
async function adoptPendingFromPostgres(ctx: CatchUpContext): Promise<number> {
  const { sql, own } = ctx;
  let adopted = 0;
  for (;;) {
    const rows = await sql<
      PendingRow[]
    >`select f.decision_id, f.event_id, f.authorization_id, f.user_id, f.granted_cents, f.hold_expires_at,
        f.stored, jsonb_array_length(e.payload -> 'data' -> 'object' -> 'request_history') as requests
      from fallback_decisions f left join card_events e on e.id = f.event_id
      where f.adopted_at is null order by f.created_at
      limit ${limits.adoptionBatchMax}`;
    for (const row of rows) {
      await adoptOrThrow(ctx, grantOfRow(row));
    }
    if (rows.length > 0) {
      const ids = rows.map((row) => row.decision_id);
      await sql`update fallback_decisions set adopted_at = now() where decision_id = any(${ids}::text[])`;
      for (const id of ids) own.forget(id);
    }
    adopted += rows.length;
    if (rows.length < limits.adoptionBatchMax) return adopted;
  }
}

/** adopt() for the Postgres pass: a Redis failure there is told apart from a Postgres one. */
async function adoptOrThrow(ctx: CatchUpContext, grant: FallbackGrant): Promise<void> {
  try {
    await ctx.adopt(grant);
  } catch (error) {
    throw new AdoptError(error);
  }
}

/** A Redis failure while adopting the decisions read from Postgres. */
class AdoptError extends Error {
  readonly code = 'adopt_failed';
  constructor(cause: unknown) {
    super('adopting a fallback decision into Redis failed', { cause });
  }
}
