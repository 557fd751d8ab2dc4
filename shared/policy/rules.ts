/**
 * The decision rules as one pure function over exact integers, in their order: card known, card
 * active, card not frozen, account active, merchant category not blocked, authorization not ended,
 * velocity, daily limit, available credit. The Redis script (hot-path/decision/lua.ts DECIDE)
 * applies the same rules in the same order inside Redis; the Postgres fallback calls this function.
 * hot-path/decision/rules.test.ts runs both on the same vectors so they cannot drift apart.
 */
import type { DecisionReason } from '../outbox/records.ts';

/**
 * Decisions declined before the velocity check: they do not count toward the velocity limit. The
 * DECIDE script adds a decision to the velocity window only once it passed these checks; the fallback
 * counts recorded decisions the same way (every other reason, declines for velocity, daily limit and
 * credit included).
 */
export const REASONS_NOT_COUNTED_FOR_VELOCITY: ReadonlySet<DecisionReason> = new Set<DecisionReason>([
  'unknown_card',
  'card_inactive',
  'card_frozen',
  'account_inactive',
  'blocked_mcc',
  'invalid_request',
  'system_unavailable',
]);

export interface RuleInput {
  cardKnown: boolean;
  cardStatus: string;
  cardFrozen: boolean;
  accountStatus: string;
  merchantCategoryCode: string;
  globallyBlockedMccs: ReadonlySet<string>;
  userBlockedMccs: readonly string[];
  /** Terminal authorization (closed/reversed/expired) receiving an increment. */
  authorizationTerminal: boolean;
  decisionsLastMinute: number;
  velocityLimitPerMin: number;
  spentTodayCents: bigint;
  dailyLimitCents: bigint;
  /** min(credit limit, borrow power). */
  capCents: bigint;
  debtOnchainCents: bigint;
  unsettledCents: bigint;
  holdsCents: bigint;
  anyPriceStale: boolean;
  amountCents: bigint;
  amountControllable: boolean;
}

export interface RuleOutcome {
  reason: DecisionReason;
  grantedCents: bigint;
}

export function evaluateRules(input: RuleInput): RuleOutcome {
  const decline = (reason: DecisionReason): RuleOutcome => ({ reason, grantedCents: 0n });
  if (!input.cardKnown) return decline('unknown_card');
  if (input.cardStatus !== 'active') return decline('card_inactive');
  if (input.cardFrozen) return decline('card_frozen');
  if (input.accountStatus !== 'active') return decline('account_inactive');
  const mcc = input.merchantCategoryCode;
  if (input.globallyBlockedMccs.has(mcc) || input.userBlockedMccs.includes(mcc))
    return decline('blocked_mcc');
  if (input.authorizationTerminal) return decline('card_inactive');
  if (input.decisionsLastMinute >= input.velocityLimitPerMin) return decline('velocity_limit');
  let granted = input.amountCents;
  const dayLeft = input.dailyLimitCents - input.spentTodayCents;
  if (dayLeft < granted) {
    if (input.amountControllable && dayLeft > 0n) granted = dayLeft;
    else return decline('daily_limit');
  }
  const available = input.capCents - input.debtOnchainCents - input.unsettledCents - input.holdsCents;
  if (available < granted) {
    if (input.amountControllable && available > 0n) granted = available;
    else return decline(input.anyPriceStale ? 'stale_price' : 'insufficient_credit');
  }
  return { reason: granted < input.amountCents ? 'partial' : 'approved', grantedCents: granted };
}
