/**
 * Job `holds`: every open hold Postgres knows (authorizations with held_cents > 0), in id order.
 *
 * - Lost by Redis: a pending authorization whose hold is missing from the user's cached holds, the
 *   user drained and stable (cache-state.ts) → reported and restored by rebuilding the cached account
 *   from Postgres (which reinstalls every open hold). An account not cached at all is rebuilt the
 *   same way (ensureAccount), so holds survive a Redis restart before the user's next swipe.
 * - An approved authorization Stripe `closed` keeps its captured part held until its capture is booked
 *   (shared/lifecycle): it is treated like a pending one, released only past its expiry.
 * - Past its expiry (plus `holdExpiryGraceS`), or ended by Stripe (Postgres status reversed or expired,
 *   or a pending one listed closed in a Stripe authorizations export) → released through the hot path's lifecycle script
 *   (`expireHold`, synthetic event `expire:<authorizationId>`), so the release is in the outbox and the
 *   ledger writer books it like any other. A lost hold is restored first, so the release moves money.
 * - Terminal in Postgres with money still held, but nothing left in Redis to release → reported only:
 *   it needs a ledger adjustment (see docs/reconciliation.md).
 *
 * Idempotent: `expire:<id>` is applied once per authorization; a second run finds nothing new.
 */
import type { Lifecycle } from '../shared/lifecycle/handler.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import type { Redis } from '../shared/redis/client.ts';
import { compareUser, readCachedAccount, rebuildFromPostgres, redisHoldsAhead } from './cache-state.ts';
import { limits } from './limits.ts';
import type { Finding, JobContext, JobOutcome } from './types.ts';

export interface HoldsJobOptions {
  redis: Redis;
  prefix: string;
  lifecycle: Pick<Lifecycle, 'expireHold'>;
  /** Authorizations Stripe reports closed, reversed or expired (from an authorizations export). */
  stripeClosedAuthorizationIds?: ReadonlySet<string>;
  holdsPerBatch?: number;
  holdsPerRunMax?: number;
  holdExpiryGraceS?: number;
  runTimeMaxMs?: number;
}

interface OpenHold {
  id: string;
  user_id: string;
  status: string;
  held_cents: string;
  expires_at: Date | null;
}

export function holdsJob(options: HoldsJobOptions) {
  const batch = options.holdsPerBatch ?? limits.holdsPerBatch;
  const perRunMax = options.holdsPerRunMax ?? limits.holdsPerRunMax;
  const graceMs = (options.holdExpiryGraceS ?? limits.holdExpiryGraceS) * 1000;
  const timeMaxMs = options.runTimeMaxMs ?? limits.runTimeMaxMs;
  const { redis, prefix, lifecycle } = options;
  const closedByStripe = options.stripeClosedAuthorizationIds ?? new Set<string>();

  return async (ctx: JobContext): Promise<JobOutcome> => {
    const { sql, now } = ctx;
    const startedMs = now();
    const findings: Finding[] = [];
    let checked = 0;
    const tally = { findings, repairs: 0 };
    const deps: HoldDeps = { redis, prefix, sql, lifecycle, graceMs, closedByStripe };
    let after = ctx.cursor ?? '';
    for (;;) {
      if (checked >= perRunMax || now() - startedMs >= timeMaxMs)
        return { checked, findings, repairs: tally.repairs, cursor: after };
      const holds = await sql<OpenHold[]>`
        select id, user_id::text, status, held_cents::text, expires_at from authorizations
        where held_cents > 0 and user_id is not null and id > ${after}
        order by id limit ${Math.min(batch, perRunMax - checked)}`;
      if (holds.length === 0) return { checked, findings, repairs: tally.repairs, cursor: null };
      // One user's holds are handled together: a restore rebuilds all of them at once.
      const byUser = new Map<string, OpenHold[]>();
      for (const hold of holds) byUser.set(hold.user_id, [...(byUser.get(hold.user_id) ?? []), hold]);
      for (const [userId, userHolds] of byUser) {
        checked += userHolds.length;
        await reconcileUser(userId, userHolds);
      }
      after = holds[holds.length - 1]!.id;
      await ctx.checkpoint({ cursor: after, checked });
    }

    async function reconcileUser(userId: string, userHolds: OpenHold[]): Promise<void> {
      const nowMs = now();
      // Holds still waiting: pending ones, and closed ones whose capture is not booked yet.
      const pending = userHolds.filter(isWaiting);
      await restoreLostHolds(deps, userId, pending, nowMs, tally);
      await releaseEndedHolds(deps, userId, userHolds, nowMs, tally);
    }
  };
}

/** A hold that still waits for Stripe: pending, or closed with its captured part not yet booked. */
function isWaiting(h: { status: string }): boolean {
  return h.status === 'pending' || h.status === 'closed';
}

interface HoldDeps {
  redis: Redis;
  prefix: string;
  sql: JobContext['sql'];
  lifecycle: Pick<Lifecycle, 'expireHold'>;
  graceMs: number;
  closedByStripe: ReadonlySet<string>;
}

/** What a run found and how many repairs it made (one per rebuilt account or released hold). */
interface Tally {
  findings: Finding[];
  repairs: number;
}

/** Restores the user's holds Redis lost (only when the comparison is meaningful: drained and stable). */
async function restoreLostHolds(
  { redis, prefix, sql }: HoldDeps,
  userId: string,
  pending: OpenHold[],
  nowMs: number,
  tally: Tally,
): Promise<void> {
  // 1. Restore holds Redis lost (only when the comparison is meaningful: drained and stable).
  const cached = await readCachedAccount(redis, prefix, userId);
  if (!cached.exists) {
    if (pending.length > 0 && (await ensureAccount(redis, sql, prefix, userId, nowMs))) {
      tally.repairs++;
      for (const h of pending) {
        tally.findings.push({
          kind: 'hold_lost_in_cache',
          userId,
          authorizationId: h.id,
          heldCents: h.held_cents,
          cause: 'account_not_cached',
          repaired: true,
        });
      }
    }
  } else {
    const lost = pending.filter((h) => cached.holds[h.id] === undefined);
    if (lost.length > 0) {
      const comparison = await compareUser(redis, sql, prefix, userId, nowMs);
      if (comparison.state === 'compared' && !redisHoldsAhead(comparison.diffs)) {
        const outcome = await rebuildFromPostgres(redis, sql, prefix, userId, comparison.fingerprint, nowMs);
        const repaired = outcome === 'rebuilt';
        if (repaired) tally.repairs++;
        for (const h of lost) {
          tally.findings.push({
            kind: 'hold_lost_in_cache',
            userId,
            authorizationId: h.id,
            heldCents: h.held_cents,
            cause: 'missing_from_cache',
            repaired,
          });
        }
      } else if (comparison.state === 'compared') {
        for (const h of lost) {
          tally.findings.push({
            kind: 'hold_lost_in_cache',
            userId,
            authorizationId: h.id,
            heldCents: h.held_cents,
            cause: 'cache_holds_ahead',
            repaired: false,
          });
        }
      }
      // Deferred (entries pending, or the cache moved): the next run looks again.
    }
  }
}

/** Releases the user's holds past their expiry or closed by Stripe, through the hot path's lifecycle. */
async function releaseEndedHolds(
  { redis, prefix, lifecycle, graceMs, closedByStripe }: HoldDeps,
  userId: string,
  userHolds: OpenHold[],
  nowMs: number,
  tally: Tally,
): Promise<void> {
  // 2. Release holds past their expiry or closed by Stripe.
  const inCache = await readCachedAccount(redis, prefix, userId);
  for (const h of userHolds) {
    const expired = isWaiting(h) && h.expires_at !== null && h.expires_at.getTime() + graceMs <= nowMs;
    const closed = isWaiting(h) ? h.status === 'pending' && closedByStripe.has(h.id) : true;
    if (!expired && !closed) continue;
    const reason = expired ? 'expired' : h.status !== 'pending' ? `postgres_${h.status}` : 'stripe_closed';
    if (inCache.holds[h.id] === undefined) {
      // Nothing in Redis to release (an ended authorization is never reinstalled): Postgres alone
      // holds the money, which only a ledger adjustment can move.
      if (!isWaiting(h)) {
        tally.findings.push({
          kind: 'hold_stuck_in_postgres',
          userId,
          authorizationId: h.id,
          heldCents: h.held_cents,
          status: h.status,
          repaired: false,
        });
      }
      continue;
    }
    const result = await lifecycle.expireHold(userId, h.id);
    if (result.applied && result.holdDeltaCents < 0n) tally.repairs++;
    tally.findings.push({
      kind: 'hold_released',
      userId,
      authorizationId: h.id,
      heldCents: h.held_cents,
      reason,
      repaired: result.applied && result.holdDeltaCents < 0n,
    });
  }
}
