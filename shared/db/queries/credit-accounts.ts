/**
 * `credit_accounts`: one row per user, the balances Redis's account hash mirrors (holds and unsettled
 * cents, on-chain debt in USDC base units) and a `version` bumped by every change. Every service adds
 * deltas, never sets a balance: the hot path's fallback and the ledger writer (holds, unsettled), the
 * indexer (on-chain debt, unsettled on settlement and refunds), settlement (unsettled to receivable).
 * The roles that create rows (hot path, ledger writer, indexer) hold INSERT; settlement only UPDATE.
 */
import type { Sql, Tx } from '../client.ts';
import { unnestRows } from '../unnest.ts';

export interface CreditAccountDelta {
  userId: string;
  holdsCents?: bigint;
  unsettledCents?: bigint;
  debtOnchainUsdc?: bigint;
}

/** Creates the users' accounts at zero where missing (in user order, so concurrent callers lock alike). */
export async function ensureCreditAccounts(tx: Sql | Tx, userIds: readonly string[]): Promise<void> {
  if (userIds.length === 0) return;
  const sorted = [...new Set(userIds)].sort();
  await tx`insert into credit_accounts (user_id) select unnest(${sorted}::uuid[]) on conflict do nothing`;
}

/**
 * Adds the deltas (several for one user are summed) to existing accounts and bumps the version of
 * every account named (callers leave out what does not move), in one statement, users in order. An account that does not exist is not created: call
 * `ensureCreditAccounts` first (a separate statement, because an upsert's proposed row is checked —
 * `holds_cents >= 0` — before the conflict is seen, so a delta that only releases would fail). Sent
 * together the two are pipelined, and run in order.
 */
export async function addToCreditAccounts(
  tx: Sql | Tx,
  deltas: readonly CreditAccountDelta[],
): Promise<void> {
  const byUser = new Map<string, { holds: bigint; unsettled: bigint; debt: bigint }>();
  for (const d of deltas) {
    const sum = byUser.get(d.userId) ?? { holds: 0n, unsettled: 0n, debt: 0n };
    sum.holds += d.holdsCents ?? 0n;
    sum.unsettled += d.unsettledCents ?? 0n;
    sum.debt += d.debtOnchainUsdc ?? 0n;
    byUser.set(d.userId, sum);
  }
  if (byUser.size === 0) return;
  const rows = [...byUser];
  rows.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  await tx`update credit_accounts c set holds_cents = c.holds_cents + v.holds,
      unsettled_cents = c.unsettled_cents + v.unsettled, debt_onchain_usdc = c.debt_onchain_usdc + v.debt,
      version = c.version + 1, updated_at = now()
    from ${unnestRows(tx, rows, {
      user_id: ['uuid', ([userId]) => userId],
      holds: ['bigint', ([, s]) => s.holds.toString()],
      unsettled: ['bigint', ([, s]) => s.unsettled.toString()],
      debt: ['numeric', ([, s]) => s.debt.toString()],
    })}
    where c.user_id = v.user_id`;
}
