/**
 * The effective card controls, as every decider sees them: the Redis account builder
 * (shared/redis/account.ts), the Postgres fallback (hot-path/decision/postgres-fallback.ts) and the
 * write-through of every control change (shared/controls/program.ts) all read them here, so they
 * cannot disagree on what "frozen" or "the daily limit" means.
 *
 * - A card is frozen when the user froze it (`cards.frozen`) or ops did (`cards.ops_frozen`).
 * - The daily limit is the user's limit in force — or the increase they asked for, once its cool-down
 *   has passed (`daily_limit_pending_at <= now`), even before the sweep has moved it — capped by the
 *   program's ceiling.
 */
import type { Sql, Tx } from '../client.ts';

export interface DailyLimitState {
  inForceCents: bigint;
  pendingCents: bigint | null;
  pendingAtMs: number | null;
  ceilingCents: bigint | null;
}

/** The daily limit a decision uses at `nowMs`. */
export function effectiveDailyLimitCents(state: DailyLimitState, nowMs: number): bigint {
  const due = state.pendingCents !== null && state.pendingAtMs !== null && state.pendingAtMs <= nowMs;
  const chosen = due ? (state.pendingCents as bigint) : state.inForceCents;
  return state.ceilingCents !== null && state.ceilingCents < chosen ? state.ceilingCents : chosen;
}

export interface EffectiveCard {
  cardId: string;
  status: 'active' | 'inactive' | 'canceled';
  /** User freeze or ops freeze. */
  frozen: boolean;
}

export interface UserControls {
  userId: string;
  status: string;
  creditLimitCents: bigint;
  /** Effective: see effectiveDailyLimitCents. */
  dailyLimitCents: bigint;
  dailyLimit: DailyLimitState;
  blockedMccs: string[];
  controlsVersion: bigint;
  cards: EffectiveCard[];
}

interface UserRow {
  id: string;
  status: string;
  credit_limit_cents: string;
  daily_limit_cents: string;
  daily_limit_pending_cents: string | null;
  daily_limit_pending_at: Date | null;
  daily_limit_ceiling_cents: string | null;
  blocked_mccs: string[];
  controls_version: string;
}

interface CardRow {
  id: string;
  status: EffectiveCard['status'];
  frozen: boolean;
}

function dailyLimitOf(row: UserRow): DailyLimitState {
  return {
    inForceCents: BigInt(row.daily_limit_cents),
    pendingCents: row.daily_limit_pending_cents === null ? null : BigInt(row.daily_limit_pending_cents),
    pendingAtMs: row.daily_limit_pending_at?.getTime() ?? null,
    ceilingCents: row.daily_limit_ceiling_cents === null ? null : BigInt(row.daily_limit_ceiling_cents),
  };
}

// The two queries below select the same user columns and the same `frozen` expression; both feed
// effectiveDailyLimitCents. Keep them in step.

/** Everything a cached account needs about the user's controls. Null when the user does not exist. */
export async function userControls(
  tx: Tx | Sql,
  userId: string,
  nowMs: number,
): Promise<UserControls | null> {
  const [user] = await tx<UserRow[]>`
    select id, status, credit_limit_cents::text, daily_limit_cents::text, daily_limit_pending_cents::text,
      daily_limit_pending_at, daily_limit_ceiling_cents::text, blocked_mccs, controls_version::text
    from users where id = ${userId}`;
  if (user === undefined) return null;
  const cards = await tx<CardRow[]>`
    select id, status, (frozen or ops_frozen) as frozen from cards where user_id = ${userId} order by id`;
  const dailyLimit = dailyLimitOf(user);
  return {
    userId: user.id,
    status: user.status,
    creditLimitCents: BigInt(user.credit_limit_cents),
    dailyLimitCents: effectiveDailyLimitCents(dailyLimit, nowMs),
    dailyLimit,
    blockedMccs: user.blocked_mccs,
    controlsVersion: BigInt(user.controls_version),
    cards: cards.map((c) => ({ cardId: c.id, status: c.status, frozen: c.frozen })),
  };
}

/** The row the Postgres fallback decides from (field names as its query had them). */
export interface DecisionControlsRow {
  user_id: string;
  status: string;
  frozen: boolean;
  user_status: string;
  credit_limit_cents: string;
  daily_limit_cents: string;
  blocked_mccs: string[];
}

/**
 * The effective controls of one card and its user, for the Postgres fallback. Undefined for an
 * unknown card.
 */
export async function cardControlsForDecision(
  tx: Tx | Sql,
  cardId: string,
  nowMs: number,
): Promise<DecisionControlsRow | undefined> {
  const [row] = await tx<(UserRow & { card_status: EffectiveCard['status']; frozen: boolean })[]>`
    select u.id, u.status, u.credit_limit_cents::text, u.daily_limit_cents::text, u.daily_limit_pending_cents::text,
      u.daily_limit_pending_at, u.daily_limit_ceiling_cents::text, u.blocked_mccs, u.controls_version::text,
      c.status as card_status, (c.frozen or c.ops_frozen) as frozen
    from cards c join users u on u.id = c.user_id where c.id = ${cardId}`;
  if (row === undefined) return undefined;
  return {
    user_id: row.id,
    status: row.card_status,
    frozen: row.frozen,
    user_status: row.status,
    credit_limit_cents: row.credit_limit_cents,
    daily_limit_cents: effectiveDailyLimitCents(dailyLimitOf(row), nowMs).toString(),
    blocked_mccs: row.blocked_mccs,
  };
}
