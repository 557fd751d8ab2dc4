/**
 * The fallback decision when Redis is unreachable or slow: the same rules (shared/policy/rules.ts) over
 * the system of record, with the user's credit_accounts row locked (SELECT … FOR UPDATE) so concurrent
 * authorizations of one user are serialised, and the hold written in the same transaction as the
 * decision.
 *
 * One decision, one answer (ARCHITECTURE.md invariant 7):
 * - it grants only while no other hot-path process holds a live Redis lease (redis-lease.ts), checked
 *   under a shared advisory lock that lease acquisition takes exclusively — otherwise it declines
 *   `system_unavailable` (fenced), so it never grants credit a Redis decider is granting too;
 * - what it grants one user before its decisions are adopted into Redis is capped
 *   (FALLBACK_GRANT_CENTS_MAX, reason `fallback_limit`): the bound on what a Redis decision it cannot
 *   see (an outbox entry not yet written) can add to it;
 * - its decision is stored durably (`fallback_decisions`) for every process to adopt into Redis before
 *   deciding there again;
 * - it takes the hold's ledger ref (`hold:<eventId>`) even when it declines, so a late Redis attempt for
 *   the same request is never booked by the ledger writer;
 * - its statements time out with the budget, and it refuses to commit once the answer's deadline has
 *   passed, so a transaction that outlives the answer rolls back.
 */
import assert from 'node:assert/strict';
import { globallyBlockedMccs } from '../../shared/controls/cash-policy.ts';
import { borrowPowerCents } from '../../shared/credit.ts';
import type { Sql, Tx } from '../../shared/db/client.ts';
import { writeAuthorizations } from '../../shared/db/queries/authorizations.ts';
import { insertCardEvents } from '../../shared/db/queries/card-events.ts';
import { cardControlsForDecision, type DecisionControlsRow } from '../../shared/db/queries/controls.ts';
import { addToCreditAccounts, ensureCreditAccounts } from '../../shared/db/queries/credit-accounts.ts';
import { insertDecisions } from '../../shared/db/queries/decisions.ts';
import { cardMovementEntries, insertAudit, insertTransfers } from '../../shared/db/queries/ledger.ts';
import { DeadlineError } from '../../shared/deadline.ts';
import { type FallbackGrant, grantAuthVersion } from '../../shared/lifecycle/adoption.ts';
import { usdcToCentsCeil } from '../../shared/money.ts';
import type { DecisionReason } from '../../shared/outbox/records.ts';
import { holdExpiresAtMs } from '../../shared/policy/hold-expiry.ts';
import { evaluateRules, REASONS_NOT_COUNTED_FOR_VELOCITY } from '../../shared/policy/rules.ts';
import { encodeStoredAnswer } from '../../shared/policy/stored-answer.ts';
import type { Market } from '../../shared/redis/market.ts';
import type { AuthorizationRequestEvent } from '../../shared/stripe/events.ts';
import { DECIDER_LOCK_KEY } from './redis-lease.ts';
import type { DecisionOutcome, DecisionSettings } from './types.ts';

export interface FallbackDeps {
  sql: Sql;
  market: Market;
  settings: DecisionSettings;
  now: () => number;
  /** This process's lease holder id: its own lease does not fence its own fallback. */
  holder: string;
}

export interface FallbackResult {
  decision: Omit<DecisionOutcome, 'redisRoundTrips'>;
  userId: string | null;
  /** The decision to adopt into Redis (null for replays, unknown cards and fenced declines). */
  grant: FallbackGrant | null;
  /** True when another process's live Redis lease kept this fallback from granting. */
  fenced: boolean;
}

/** One fallback decision in its transaction: what every step of it reads. */
interface FallbackRequest {
  deps: FallbackDeps;
  tx: Tx;
  event: AuthorizationRequestEvent;
  auth: AuthorizationRequestEvent['data']['object'];
  amount: bigint;
  mcc: string;
  decisionId: string;
}

/** What the rules decided: the reason and the cents granted. */
type RulesOutcome = { reason: DecisionReason; grantedCents: bigint };

/** The rules' outcome as booked: whether it approves, and the cents it grants. */
interface Verdict {
  outcome: RulesOutcome;
  approved: boolean;
  granted: bigint;
}

export async function decideFromPostgres(
  deps: FallbackDeps,
  event: AuthorizationRequestEvent,
  rawBody: string,
  decisionId: string,
  startedAtMs: number,
  deadlineMs: number,
): Promise<FallbackResult> {
  const auth = event.data.object;
  const amount = BigInt(auth.pending_request.amount);
  const mcc = auth.merchant_data.category_code;
  const remainingMs = deadlineMs - deps.now();
  if (remainingMs < 1) throw new DeadlineError('no time left for the Postgres fallback');
  return deps.sql.begin(async (tx) => {
    const request: FallbackRequest = { deps, tx, event, auth, amount, mcc, decisionId };
    return decideInTransaction(request, rawBody, startedAtMs, deadlineMs, remainingMs);
  });
}

/** The fallback decision inside its transaction: replay, fence, rules, bookings, the grant to adopt. */
async function decideInTransaction(
  request: FallbackRequest,
  rawBody: string,
  startedAtMs: number,
  deadlineMs: number,
  remainingMs: number,
): Promise<FallbackResult> {
  const { deps, tx, event, auth, decisionId } = request;
  const timeoutMs = Math.max(1, Math.floor(remainingMs));
  await tx.unsafe(`set local statement_timeout = ${timeoutMs}; set local lock_timeout = ${timeoutMs}`);
  await tx`select pg_advisory_xact_lock_shared(${DECIDER_LOCK_KEY})`;
  const replayed = await priorAnswer(deps, tx, event.id);
  if (replayed !== undefined) return replayed;
  const fenced = await fencedAnswer(deps, tx, decisionId);
  if (fenced !== undefined) return fenced;
  // The effective controls (ops or user freeze, suspension, credit limit, daily limit after its
  // cool-down and under the ceiling), read as the Redis account builder reads them.
  const card = await cardControlsForDecision(tx, auth.card.id, deps.now());
  const nowMs = deps.now();
  const userId = card?.user_id ?? null;
  let outcome: RulesOutcome = { reason: 'unknown_card', grantedCents: 0n };
  if (card !== undefined && userId !== null) {
    outcome = await evaluateFromPostgres(request, card, userId, nowMs);
  }
  const approved = outcome.reason === 'approved' || outcome.reason === 'partial';
  const granted = outcome.grantedCents;
  const latencyUs = Math.max(0, Math.round((deps.now() - startedAtMs) * 1000));
  const verdict: Verdict = { outcome, approved, granted };
  if (!(await insertDecisionOnce(request, verdict, userId, nowMs, latencyUs))) {
    // The ledger writer committed this event's decision (a Redis attempt given up here whose script had
    // run) after the read of prior answers, and before anything of this decision was written: answer it,
    // as any replay (this statement sees it). It was a bare Error before: a 500 to Stripe.
    const recorded = await priorAnswer(deps, tx, event.id);
    assert(recorded !== undefined, 'the decision that took this event is there');
    return recorded;
  }
  await writeAuthorizationRow(request, verdict, userId, nowMs, latencyUs);
  if (userId !== null) await bookHold(request, userId, granted);
  await recordEventAndAudit(request, verdict, userId, rawBody);
  let grant: FallbackGrant | null = null;
  if (userId !== null) grant = await storeGrant(request, verdict, userId, nowMs);
  // The answer goes out at the deadline whatever happens here: past it, roll back rather than commit
  // a decision Stripe was not told.
  if (deps.now() > deadlineMs) throw new DeadlineError('the fallback decision missed its deadline');
  return {
    userId,
    grant,
    fenced: false,
    decision: {
      approved,
      amountCents: granted,
      reason: outcome.reason,
      decisionId,
      source: 'postgres' as const,
      replay: false,
    },
  };
}

/** A decision already recorded for this event, answered again (a replay); undefined when there is none. */
async function priorAnswer(deps: FallbackDeps, tx: Tx, eventId: string): Promise<FallbackResult | undefined> {
  const prior = await tx<
    {
      id: string;
      approved: boolean;
      approved_cents: string;
      reason: string;
      user_id: string | null;
      source: string;
    }[]
  >`
    select id, approved, approved_cents, reason, user_id, source from decisions where event_id = ${eventId}`;
  if (prior[0] !== undefined) {
    const p = prior[0];
    if (p.approved && p.source === 'redis' && deps.settings.REDIS_WAIT_REPLICAS > 0) {
      // With REDIS_WAIT_REPLICAS a Redis approval in Postgres is not final: the ledger writer can copy
      // it before its WAIT comes back short, and the hot path then withdraws it (its hold released,
      // replication_unconfirmed). Replaying it here would tell Stripe "approved" for a hold that may be
      // gone (seen with a cluster primary killed under traffic). Declined instead, under the same
      // decision id: less credit at worst, and Stripe's issuing_authorization.created settles the hold.
      return {
        userId: p.user_id,
        grant: null,
        fenced: false,
        decision: {
          approved: false,
          amountCents: 0n,
          reason: 'replication_unconfirmed' as const,
          decisionId: p.id,
          source: 'postgres' as const,
          replay: true,
        },
      };
    }
    return {
      userId: p.user_id,
      grant: null,
      fenced: false,
      decision: {
        approved: p.approved,
        amountCents: BigInt(p.approved_cents),
        reason: p.reason as DecisionReason,
        decisionId: p.id,
        source: 'postgres' as const,
        replay: true,
      },
    };
  }
  return undefined;
}

/** A fenced decline while another process holds a live Redis lease; undefined when none does. */
async function fencedAnswer(
  deps: FallbackDeps,
  tx: Tx,
  decisionId: string,
): Promise<FallbackResult | undefined> {
  const [live] = await tx<{ live: boolean }[]>`select exists (select 1 from redis_deciders
    where holder <> ${deps.holder} and expires_at > clock_timestamp()) as live`;
  if (live?.live === true) {
    // Another process decides from Redis: granting here could spend the same credit twice.
    return {
      userId: null,
      grant: null,
      fenced: true,
      decision: {
        approved: false,
        amountCents: 0n,
        reason: 'system_unavailable' as const,
        decisionId,
        source: 'postgres' as const,
        replay: false,
      },
    };
  }
  return undefined;
}

/** The rules over the user's account, positions and recent decisions, then the per-outage grant cap. */
async function evaluateFromPostgres(
  request: FallbackRequest,
  card: DecisionControlsRow,
  userId: string,
  nowMs: number,
): Promise<RulesOutcome> {
  const { deps, tx, auth, amount, mcc } = request;
  await ensureCreditAccounts(tx, [userId]);
  const [account] = await tx<{ debt_onchain_usdc: string; unsettled_cents: string; holds_cents: string }[]>`
    select debt_onchain_usdc::text, unsettled_cents, holds_cents from credit_accounts where user_id = ${userId} for update`;
  const dayStart = new Date(Math.floor(nowMs / 86_400_000) * 86_400_000);
  // Velocity and daily spend are counted as the DECIDE script counts them (shared/policy/rules.ts): every decision
  // that reached the velocity check in the last 60 s, and the amounts granted by decisions of this
  // UTC day (increments of older authorizations included).
  const [positions, spent, recent, existing, pending] = await Promise.all([
    tx<{ asset_id: string; collateral_base: string; pending_withdrawal_base: string }[]>`
      select asset_id, collateral_base::text, pending_withdrawal_base::text from positions where user_id = ${userId}`,
    tx<{ spent: string }[]>`select coalesce(sum(approved_cents), 0)::text as spent from decisions
      where user_id = ${userId} and approved and decided_at >= ${dayStart}`,
    tx<{ n: number }[]>`select count(*)::int as n from decisions where user_id = ${userId}
      and decided_at > ${new Date(nowMs - 60_000)} and reason <> all(${[...REASONS_NOT_COUNTED_FOR_VELOCITY]}::text[])`,
    tx<{ status: string }[]>`select status from authorizations where id = ${auth.id}`,
    tx<{ granted: string }[]>`select coalesce(sum(granted_cents), 0)::text as granted from fallback_decisions
      where user_id = ${userId} and adopted_at is null`,
  ]);
  const power = borrowPowerCents({
    holdings: positions.map((p) => ({
      assetId: p.asset_id,
      amountBase: BigInt(p.collateral_base),
      pendingWithdrawalBase: BigInt(p.pending_withdrawal_base),
    })),
    assets: deps.market.assets,
    prices: deps.market.prices,
    nowS: Math.floor(nowMs / 1000),
  });
  const limit = BigInt(card.credit_limit_cents);
  let outcome = evaluateRules({
    cardKnown: true,
    cardStatus: card.status,
    cardFrozen: card.frozen,
    accountStatus: card.user_status,
    merchantCategoryCode: mcc,
    globallyBlockedMccs: globallyBlockedMccs(deps.settings),
    userBlockedMccs: card.blocked_mccs,
    authorizationTerminal: existing[0] !== undefined && existing[0].status !== 'pending',
    decisionsLastMinute: recent[0]?.n ?? 0,
    velocityLimitPerMin: deps.settings.VELOCITY_LIMIT_PER_MIN,
    spentTodayCents: BigInt(spent[0]?.spent ?? '0'),
    dailyLimitCents: BigInt(card.daily_limit_cents),
    capCents: limit < power.borrowPowerCents ? limit : power.borrowPowerCents,
    debtOnchainCents: usdcToCentsCeil(BigInt(account?.debt_onchain_usdc ?? '0')),
    unsettledCents: BigInt(account?.unsettled_cents ?? '0'),
    holdsCents: BigInt(account?.holds_cents ?? '0'),
    anyPriceStale: power.staleAssetIds.length > 0,
    amountCents: amount,
    amountControllable: auth.pending_request.is_amount_controllable,
  });
  // The per-outage cap on what the fallback grants this user (see the module comment).
  const capLeft = deps.settings.FALLBACK_GRANT_CENTS_MAX - BigInt(pending[0]?.granted ?? '0');
  if (outcome.grantedCents > capLeft) {
    outcome =
      auth.pending_request.is_amount_controllable && capLeft > 0n
        ? { reason: 'partial', grantedCents: capLeft }
        : { reason: 'fallback_limit', grantedCents: 0n };
  }
  return outcome;
}

/** The decision row; false when a decision of this event was recorded meanwhile by another decider. */
async function insertDecisionOnce(
  request: FallbackRequest,
  verdict: Verdict,
  userId: string | null,
  nowMs: number,
  latencyUs: number,
): Promise<boolean> {
  const { tx, event, auth, amount, decisionId } = request;
  const { outcome, approved, granted } = verdict;
  const fresh = await insertDecisions(tx, [
    {
      id: decisionId,
      eventId: event.id,
      authorizationId: auth.id,
      userId,
      cardId: auth.card.id,
      approved,
      requestedCents: amount,
      approvedCents: granted,
      reason: outcome.reason,
      source: 'postgres',
      latencyUs,
      decidedAt: new Date(nowMs),
    },
  ]);
  // Another decider recorded this event after the read above (the ledger writer copying Redis's
  // decision): its insert skipped, as the unique index would have refused it.
  return fresh.has(event.id);
}

/** The authorization row, created or added to, with the merchant name left for the writer to seal. */
async function writeAuthorizationRow(
  request: FallbackRequest,
  verdict: Verdict,
  userId: string | null,
  nowMs: number,
  latencyUs: number,
): Promise<void> {
  const { deps, tx, auth, amount, mcc, decisionId } = request;
  const { outcome, approved, granted } = verdict;
  // The merchant name is never sealed here: this process holds no data key, so a swipe never waits on
  // the HSM. It waits in merchant_names_unsealed (in this transaction, one statement with the row) for
  // the ledger writer to seal it (ledger-writer/seal-queue.ts).
  const label = approved ? (outcome.reason === 'partial' ? 'partial' : 'approved') : 'declined';
  await writeAuthorizations(tx, [
    {
      id: auth.id,
      userId,
      cardId: auth.card.id,
      create: {
        status: 'pending',
        approved,
        decision: label,
        declineReason: approved ? null : outcome.reason,
        decisionId,
        decisionSource: 'postgres',
        latencyUs,
        merchantCategoryCode: mcc,
        merchantNameSealed: null,
        merchantName: auth.merchant_data.name ?? null,
        expiresAt: new Date(holdExpiresAtMs(deps.settings, mcc, nowMs)),
        requestedCents: amount,
        approvedCents: granted,
        heldCents: granted,
        capturedCents: 0n,
      },
      add: {
        requestedCents: amount,
        approvedCents: granted,
        heldCents: granted,
        capturedCents: 0n,
        approvedByDecision: approved,
        approvedByStripe: null,
        status: null,
      },
    },
  ]);
}

/** The hold on the user's account and its ledger ref. */
async function bookHold(request: FallbackRequest, userId: string, granted: bigint): Promise<void> {
  const { tx, event, auth } = request;
  if (granted > 0n) await addToCreditAccounts(tx, [{ userId, holdsCents: granted }]);
  // The hold's ledger ref, taken even with nothing granted (no entries): a late Redis attempt for
  // this request, should it still reserve, is then never booked by the ledger writer (its ref is taken).
  await insertTransfers(tx, [
    {
      ref: `hold:${event.id}`,
      kind: 'hold',
      userId,
      authorizationId: auth.id,
      entries: cardMovementEntries(userId, { holdDeltaCents: granted, unsettledDeltaCents: 0n }),
    },
  ]);
}

/** The Stripe event and the audit row. */
async function recordEventAndAudit(
  request: FallbackRequest,
  verdict: Verdict,
  userId: string | null,
  rawBody: string,
): Promise<void> {
  const { tx, event, auth, amount, decisionId } = request;
  const { outcome, approved, granted } = verdict;
  await insertCardEvents(tx, [
    {
      id: event.id,
      type: event.type,
      userId,
      objectId: auth.id,
      payload: rawBody,
      createdAt: new Date(event.created * 1000),
    },
  ]);
  await insertAudit(tx, [
    {
      actor: 'hot-path:postgres-fallback',
      action: approved ? 'authorization.approved' : 'authorization.declined',
      entityType: 'authorization',
      entityId: auth.id,
      data: {
        decisionId,
        eventId: event.id,
        userId,
        requestedCents: amount,
        grantedCents: granted,
        reason: outcome.reason,
      },
    },
  ]);
}

/** The grant, stored durably (`fallback_decisions`) for every process to adopt into Redis. */
async function storeGrant(
  request: FallbackRequest,
  verdict: Verdict,
  userId: string,
  nowMs: number,
): Promise<FallbackGrant> {
  const { deps, tx, event, auth, mcc, decisionId } = request;
  const { outcome, approved, granted } = verdict;
  const grant: FallbackGrant = {
    decisionId,
    eventId: event.id,
    authorizationId: auth.id,
    userId,
    grantedCents: granted,
    holdExpiresAtMs: holdExpiresAtMs(deps.settings, mcc, nowMs),
    authVersion: grantAuthVersion(auth.request_history.length),
    stored: encodeStoredAnswer({ approved, amountCents: granted, reason: outcome.reason, decisionId }),
  };
  await tx`insert into fallback_decisions (decision_id, event_id, authorization_id, user_id, granted_cents,
      hold_expires_at, stored, decided_by)
    values (${decisionId}, ${event.id}, ${auth.id}, ${userId}, ${granted.toString()},
      ${new Date(grant.holdExpiresAtMs)}, ${grant.stored}, ${deps.holder})`;
  return grant;
}
