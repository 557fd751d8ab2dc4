/**
 * The stored answer: a decision's first answer, kept so that a replay of its request answers the same
 * (the Redis decision key, one per request event; `fallback_decisions.stored` in Postgres). One format,
 * `approved|amountCents|reason|decisionId` with approved `1` or `0`, written and read by TypeScript
 * through `encodeStoredAnswer`/`parseStoredAnswer` and by the Lua scripts (hot-path/decision/lua.ts)
 * through the fragments below, so both sides spell it the same.
 */
import type { DecisionReason } from '../outbox/records.ts';
import { luaConcat } from './lua-source.ts';

export interface StoredAnswer {
  approved: boolean;
  /** Cents granted (0 when declined). */
  amountCents: bigint;
  reason: DecisionReason;
  decisionId: string;
}

/** Between the parts. Not a Lua pattern magic character, so the patterns below use it as it is. */
const SEPARATOR = '|';
const APPROVED = '1';
const DECLINED = '0';

/** @example encodeStoredAnswer({ approved: true, amountCents: 2500n, reason: 'approved', decisionId: 'dec_1' }) // '1|2500|approved|dec_1' */
export function encodeStoredAnswer(answer: StoredAnswer): string {
  return [answer.approved ? APPROVED : DECLINED, answer.amountCents, answer.reason, answer.decisionId].join(
    SEPARATOR,
  );
}

/** Reads a stored answer; missing parts read as a decline `system_unavailable` of 0 cents. */
export function parseStoredAnswer(stored: string): StoredAnswer {
  const [approved, amount, reason, decisionId] = stored.split(SEPARATOR);
  return {
    approved: approved === APPROVED,
    amountCents: BigInt(amount ?? '0'),
    reason: (reason ?? 'system_unavailable') as DecisionReason,
    decisionId: decisionId ?? '',
  };
}

/** True when `stored` is an approval (without parsing the rest). */
export function isStoredApproval(stored: string): boolean {
  return stored.startsWith(APPROVED + SEPARATOR);
}

/** The Lua side: source fragments spliced into the scripts. */
export const STORED_ANSWER_LUA = {
  /** A Lua string literal: what a stored approval begins with (compare `string.sub(s, 1, 2)`). */
  approvalPrefix: `'${APPROVED}${SEPARATOR}'`,
  /** A Lua pattern over any stored answer, capturing its amount and decision id. */
  anyAmountAndId: `'^[${DECLINED}${APPROVED}]${SEPARATOR}(%d+)${SEPARATOR}[^${SEPARATOR}]*${SEPARATOR}(.*)$'`,
  /** A Lua pattern over a stored approval, capturing its amount and decision id. */
  approvalAmountAndId: `'^${APPROVED}${SEPARATOR}(%d+)${SEPARATOR}[^${SEPARATOR}]*${SEPARATOR}(.*)$'`,
  /** Lua literal of the approved flag. */
  approved: `'${APPROVED}'`,
  /** Lua literal of the declined flag. */
  declined: `'${DECLINED}'`,
  /**
   * A Lua expression building a stored answer from four Lua expressions (the approved flag, the
   * amount as text, the reason, the decision id).
   * @example encode("'0'", "'0'", 'ARGV[4]', 'ARGV[1]') // "'0|0|' .. ARGV[4] .. '|' .. ARGV[1]"
   */
  encode(approved: string, amount: string, reason: string, decisionId: string): string {
    return luaConcat([approved, amount, reason, decisionId], SEPARATOR);
  },
} as const;
