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
import type { LifecycleRecord } from '../../shared/outbox.ts';
import { utcDay } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { runScript } from '../../shared/redis/script.ts';
import { limits } from '../limits.ts';
import { withDeadline } from './deadline.ts';
import { ADOPT_FALLBACK } from './scripts.ts';

/** The advisory lock that orders lease acquisitions (exclusive) against fallback grants (shared). */
export const DECIDER_LOCK_KEY = 7_431_015;

/** A decision the Postgres fallback stored, to be mirrored into the cache (hold and idempotency key). */
export interface FallbackGrant {
  decisionId: string;
  eventId: string;
  authorizationId: string;
  userId: string;
  grantedCents: bigint;
  holdExpiresAtMs: number;
  /**
   * The authorization's version once this request is counted (request count × 1e10, as the lifecycle
   * script's versions count requests), or null when unknown: Stripe's events at or past it already
   * cover this grant (ADOPT_FALLBACK 'settled').
   */
  authVersion: number | null;
  /** The stored answer, in the decision key's format: approved|amount|reason|decisionId. */
  stored: string;
}

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
  let validUntil = 0; // performance.now() time
  let redisOkAt = Number.NEGATIVE_INFINITY; // performance.now() time of the last Redis answer
  let isSuspect = false;
  let postgresUnreachable = false;
  let flight: Promise<boolean> | null = null;
  // The removal of our lease row after a Redis failure; a renewal waits for it, so a late delete can
  // never remove a lease renewed after it.
  let releasing: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  // Grants this process made, until adopted: what it can adopt without Postgres. By user too, so a
  // Redis decision for a user first adopts that user's grants (one lookup when there are none).
  const own = new Map<string, FallbackGrant>();
  const ownByUser = new Map<string, Set<string>>();
  // Own grants adopted into Redis and not yet marked adopted in Postgres (the next renewal marks them).
  let adoptedUnmarked: string[] = [];
  const forgetOwn = (decisionId: string) => {
    const grant = own.get(decisionId);
    if (grant === undefined) return;
    own.delete(decisionId);
    const ids = ownByUser.get(grant.userId);
    ids?.delete(decisionId);
    if (ids?.size === 0) ownByUser.delete(grant.userId);
  };

  const adopt = (grant: FallbackGrant) => adoptGrant(redis, prefix, grant);

  /** adopt() for the Postgres pass: a Redis failure there is told apart from a Postgres one. */
  async function adoptOrThrow(grant: FallbackGrant): Promise<void> {
    try {
      await adopt(grant);
    } catch (error) {
      throw new AdoptError(error);
    }
  }

  async function renewInPostgres(acquire: boolean): Promise<number> {
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

  async function adoptPendingFromPostgres(): Promise<number> {
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
        await adoptOrThrow(grantOfRow(row));
      }
      if (rows.length > 0) {
        const ids = rows.map((row) => row.decision_id);
        await sql`update fallback_decisions set adopted_at = now() where decision_id = any(${ids}::text[])`;
        for (const id of ids) forgetOwn(id);
      }
      adopted += rows.length;
      if (rows.length < limits.adoptionBatchMax) return adopted;
    }
  }

  async function runCatchUp(): Promise<boolean> {
    // Redis first: a lease says "I can decide from Redis", so it is only renewed while Redis answers.
    const adoptedOwn: string[] = adoptedUnmarked;
    adoptedUnmarked = [];
    try {
      if (isSuspect || performance.now() - redisOkAt > leaseMs / 4) await redis.ping();
      redisOkAt = performance.now();
      // Our own grants first: adopting them needs no Postgres.
      for (const grant of [...own.values()]) {
        await adopt(grant);
        adoptedOwn.push(grant.decisionId);
        forgetOwn(grant.decisionId);
      }
    } catch (error) {
      adoptedUnmarked.push(...adoptedOwn);
      isSuspect = true;
      emit({ kind: 'catch_up_failed', stage: 'redis', error });
      return false;
    }
    const acquire = performance.now() >= validUntil;
    let sentAt: number;
    let adopted = adoptedOwn.length;
    try {
      // Bounded by a quarter lease: a Postgres that hangs (rather than refuses) is found unreachable
      // before the lease runs out, so the Redis path keeps deciding through a Postgres outage.
      const renewed = await withDeadline(
        (async () => {
          await releasing;
          const at = await renewInPostgres(acquire);
          if (adoptedOwn.length > 0)
            await sql`update fallback_decisions set adopted_at = now() where decision_id = any(${adoptedOwn}::text[])`;
          return { at, adopted: acquire ? await adoptPendingFromPostgres() : 0 };
        })(),
        renewTimeoutMs,
      );
      sentAt = renewed.at;
      adopted += renewed.adopted;
    } catch (error) {
      adoptedUnmarked.push(...adoptedOwn);
      if (error instanceof AdoptError) {
        isSuspect = true;
        emit({ kind: 'catch_up_failed', stage: 'adopt', error: error.cause });
        return false;
      }
      // Postgres is unreachable: no fallback can grant through it either, except across a double
      // partition (see the module comment). Keep deciding from Redis rather than stopping the hot path.
      postgresUnreachable = true;
      isSuspect = false;
      emit({ kind: 'postgres_unreachable', error });
      return true;
    }
    validUntil = sentAt + leaseMs;
    postgresUnreachable = false;
    isSuspect = false;
    if (acquire || adopted > 0) emit({ kind: 'caught_up', adopted, postgres: true });
    return true;
  }

  function catchUp(): Promise<boolean> {
    if (flight === null) {
      flight = runCatchUp().finally(() => {
        flight = null;
      });
    }
    return flight;
  }

  return {
    holder,
    mayDecide: () => !isSuspect && (postgresUnreachable || performance.now() < validUntil),
    suspect: () => isSuspect,
    noteRedisOk() {
      redisOkAt = performance.now();
    },
    markSuspect() {
      if (!isSuspect) {
        // Give the lease up at once: while this process cannot reach Redis it decides nothing there,
        // and its lease would hold back the fallback of every other process until it expired.
        validUntil = 0;
        releasing = sql`delete from redis_deciders where holder = ${holder}`.catch(() => {});
      }
      isSuspect = true;
      catchUp().catch(() => {});
    },
    catchUp,
    remember(grant) {
      if (own.size >= limits.ownGrantsMax) return;
      own.set(grant.decisionId, grant);
      const ids = ownByUser.get(grant.userId) ?? new Set<string>();
      ids.add(grant.decisionId);
      ownByUser.set(grant.userId, ids);
    },
    async adoptOwn(userId) {
      const ids = ownByUser.get(userId);
      if (ids === undefined) return 0;
      let trips = 0;
      for (const id of [...ids]) {
        const grant = own.get(id);
        if (grant === undefined) continue;
        await adopt(grant);
        trips++;
        forgetOwn(id);
        adoptedUnmarked.push(id);
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
      validUntil = 0;
      await sql`delete from redis_deciders where holder = ${holder}`.catch(() => {});
    },
  };
}

export type AdoptResult = 'adopted' | 'known' | 'key-only' | 'superseded' | 'settled';

/** Mirrors one fallback decision into the cache (ADOPT_FALLBACK); idempotent. */
export async function adoptGrant(redis: Redis, prefix: string, grant: FallbackGrant): Promise<AdoptResult> {
  const keys = userKeys(prefix, grant.userId);
  return runScript<AdoptResult>(
    redis,
    ADOPT_FALLBACK,
    [
      keys.account,
      keys.holds,
      keys.holdExpiries,
      keys.decision(grant.eventId),
      keys.daySpend(utcDay(Date.now())),
      keys.authState(grant.authorizationId),
      keys.outbox,
    ],
    [
      grant.stored,
      limits.decisionTtlS,
      grant.authorizationId,
      grant.grantedCents.toString(),
      grant.holdExpiresAtMs,
      grant.decisionId,
      grant.authVersion === null ? '' : grant.authVersion,
      JSON.stringify(correctionRecord(grant, 'settled')),
      JSON.stringify(correctionRecord(grant, 'superseded')),
    ],
  );
}

/** Per Postgres client: until when (performance.now()) lifecycle events skip the pending-grant check. */
const pendingCheckPausedUntil = new WeakMap<Sql, number>();

interface PendingRow {
  decision_id: string;
  event_id: string;
  authorization_id: string;
  user_id: string;
  granted_cents: string;
  hold_expires_at: Date;
  stored: string;
  requests: number | null;
}

function grantOfRow(row: PendingRow): FallbackGrant {
  return {
    decisionId: row.decision_id,
    eventId: row.event_id,
    authorizationId: row.authorization_id,
    userId: row.user_id,
    grantedCents: BigInt(row.granted_cents),
    holdExpiresAtMs: row.hold_expires_at.getTime(),
    authVersion: row.requests === null ? null : grantAuthVersion(row.requests),
    stored: row.stored,
  };
}

/**
 * Adopts the fallback grants of one authorization not yet adopted, before a lifecycle event of it is
 * applied: the event's change is then computed against a cache that has them (the deltas go to
 * Postgres, which has them). Postgres unreachable or slower than `timeoutMs`: nothing is adopted here
 * (false), and the event goes on (ADOPT_FALLBACK's 'settled' keeps the two in step later). A Redis
 * failure throws.
 */
export async function adoptPendingOfAuthorization(
  sql: Sql,
  redis: Redis,
  prefix: string,
  userId: string,
  authorizationId: string,
  timeoutMs: number,
): Promise<boolean> {
  // After a failure, Postgres is not asked again for a while: through an outage the events do not each
  // wait for the timeout.
  if (performance.now() < (pendingCheckPausedUntil.get(sql) ?? 0)) return false;
  let rows: PendingRow[];
  try {
    rows = await withDeadline(
      sql<PendingRow[]>`select f.decision_id, f.event_id, f.authorization_id, f.user_id, f.granted_cents,
          f.hold_expires_at, f.stored,
          jsonb_array_length(e.payload -> 'data' -> 'object' -> 'request_history') as requests
        from fallback_decisions f left join card_events e on e.id = f.event_id
        where f.user_id = ${userId} and f.adopted_at is null and f.authorization_id = ${authorizationId}
        order by f.created_at`,
      timeoutMs,
    );
  } catch {
    pendingCheckPausedUntil.set(sql, performance.now() + limits.pendingGrantCheckPauseMs);
    return false;
  }
  for (const row of rows) await adoptGrant(redis, prefix, grantOfRow(row));
  if (rows.length > 0) {
    const ids = rows.map((row) => row.decision_id);
    // Marked by the next catch-up otherwise (adopting again is a no-op).
    await sql`update fallback_decisions set adopted_at = now() where decision_id = any(${ids}::text[])`.catch(
      () => {},
    );
  }
  return true;
}

/** The authorization's version once a request with `priorRequests` earlier ones is counted. */
export function grantAuthVersion(priorRequests: number): number {
  return (priorRequests + 1) * 1e10;
}

/**
 * A lifecycle record ADOPT_FALLBACK appends, the script filling in the hold delta: `settled` when
 * Stripe's events settled the authorization before the grant was adopted (the grant taken back out of
 * Postgres); `superseded` when the adoption replaced a late Redis attempt's grant that Postgres followed
 * (Postgres moved by the same difference as Redis).
 */
function correctionRecord(grant: FallbackGrant, kind: 'settled' | 'superseded'): LifecycleRecord {
  const eventId = `fallback_${kind}:${grant.decisionId}`;
  return {
    kind: 'lifecycle',
    eventId,
    eventType: `credana.fallback_${kind}`,
    eventCreatedS: Math.floor(Date.now() / 1000),
    userId: grant.userId,
    cardId: null,
    authorizationId: grant.authorizationId,
    transactionId: null,
    holdDeltaCents: '0',
    unsettledDeltaCents: '0',
    capturedDeltaCents: '0',
    authorization: null,
    transactionType: null,
    event: JSON.stringify({
      id: eventId,
      type: `credana.fallback_${kind}`,
      authorization: grant.authorizationId,
      decision: grant.decisionId,
    }),
  };
}

/** A Redis failure while adopting the decisions read from Postgres. */
class AdoptError extends Error {
  readonly code = 'adopt_failed';
  constructor(cause: unknown) {
    super('adopting a fallback decision into Redis failed', { cause });
  }
}
