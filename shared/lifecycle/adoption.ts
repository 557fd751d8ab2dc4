/**
 * The adoption of Postgres fallback decisions into the cache (ADOPT_FALLBACK, lua.ts): the hot path's
 * Redis lease adopts them all before it decides from Redis again (hot-path/decision/redis-lease.ts),
 * and the lifecycle handlers adopt those of an authorization before applying one of its events
 * (handler.ts), wherever they run.
 */
import type { Sql } from '../db/client.ts';
import { withDeadline } from '../deadline.ts';
import { classifyError } from '../errors.ts';
import type { LifecycleRecord } from '../outbox/records.ts';
import { policyLimits } from '../policy/limits.ts';
import { utcDay } from '../redis/account.ts';
import type { Redis } from '../redis/client.ts';
import { userKeys } from '../redis/keys.ts';
import { type RedirectPolicy, runScript } from '../redis/script.ts';
import { lifecycleLimits } from './limits.ts';
import { ADOPT_FALLBACK } from './lua.ts';

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

export type AdoptResult = 'adopted' | 'known' | 'key-only' | 'superseded' | 'settled';

/** Mirrors one fallback decision into the cache (ADOPT_FALLBACK); idempotent. */
export async function adoptGrant(
  redis: Redis,
  prefix: string,
  grant: FallbackGrant,
  redirect?: RedirectPolicy,
): Promise<AdoptResult> {
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
      policyLimits.decisionTtlS,
      grant.authorizationId,
      grant.grantedCents.toString(),
      grant.holdExpiresAtMs,
      grant.decisionId,
      grant.authVersion === null ? '' : grant.authVersion,
      JSON.stringify(correctionRecord(grant, 'settled')),
      JSON.stringify(correctionRecord(grant, 'superseded')),
    ],
    redirect,
  );
}

/** Per Postgres client: until when (performance.now()) lifecycle events skip the pending-grant check. */
const pendingCheckPausedUntil = new WeakMap<Sql, number>();

export interface PendingRow {
  decision_id: string;
  event_id: string;
  authorization_id: string;
  user_id: string;
  granted_cents: string;
  hold_expires_at: Date;
  stored: string;
  requests: number | null;
}

export function grantOfRow(row: PendingRow): FallbackGrant {
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
  } catch (error) {
    // Postgres away or slow: the check pauses. A bug goes up (a logged 500; Stripe sends the event again).
    const { fault } = classifyError(error);
    if (fault !== 'environment' && fault !== 'deployment') throw error;
    pendingCheckPausedUntil.set(sql, performance.now() + lifecycleLimits.pendingGrantCheckPauseMs);
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
