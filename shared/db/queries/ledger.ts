/**
 * Double-entry movements. Every movement is one `ledger_transfers` row (unique `ref`, the natural
 * key that makes it idempotent) and a set of `ledger_entries` that sums to zero, inserted in one
 * statement (the database's trigger refuses an unbalanced set).
 *
 * Accounts (amounts in cents; per-user accounts carry the user id):
 * - `user_holds`        open authorization holds            ↔ `program_holds`
 * - `user_unsettled`    captured, not yet recorded on-chain ↔ `program_card_spend`
 * - `user_debt_onchain` recorded by the vault               ← `user_unsettled` (settlement)
 */
import type postgres from 'postgres';
import type { Tx } from '../client.ts';

export type TransferKind =
  | 'hold'
  | 'release'
  | 'capture'
  | 'refund'
  | 'settlement'
  | 'repayment'
  | 'liquidation'
  | 'adjustment';

export interface Entry {
  account: string;
  userId: string | null;
  amountCents: bigint;
}

export interface TransferInput {
  ref: string;
  kind: TransferKind;
  userId: string | null;
  authorizationId: string | null;
  entries: Entry[];
}

/** Entries of the card movements. Zero legs are left out; an all-zero movement has no entries. */
export function cardMovementEntries(
  userId: string,
  amounts: { holdDeltaCents: bigint; unsettledDeltaCents: bigint },
): Entry[] {
  const entries: Entry[] = [];
  if (amounts.holdDeltaCents !== 0n) {
    entries.push({ account: 'user_holds', userId, amountCents: amounts.holdDeltaCents });
    entries.push({ account: 'program_holds', userId: null, amountCents: -amounts.holdDeltaCents });
  }
  if (amounts.unsettledDeltaCents !== 0n) {
    entries.push({ account: 'user_unsettled', userId, amountCents: amounts.unsettledDeltaCents });
    entries.push({ account: 'program_card_spend', userId: null, amountCents: -amounts.unsettledDeltaCents });
  }
  return entries;
}

/**
 * Inserts the transfers that are new (by ref) and their entries, in the caller's transaction.
 * Returns the refs that were new. Entries of one transfer always go in the same statement.
 */
export async function insertTransfers(tx: Tx, transfers: readonly TransferInput[]): Promise<Set<string>> {
  const withEntries = transfers.filter((t) => t.entries.length > 0);
  if (withEntries.length === 0) return new Set();
  const inserted = await tx<{ id: string; ref: string }[]>`
    insert into ledger_transfers ${tx(
      withEntries.map((t) => ({
        ref: t.ref,
        kind: t.kind,
        user_id: t.userId,
        authorization_id: t.authorizationId,
      })),
    )}
    on conflict (ref) do nothing
    returning id, ref`;
  if (inserted.length === 0) return new Set();
  const idByRef = new Map(inserted.map((row) => [row.ref, row.id]));
  const rows = withEntries.flatMap((t) => {
    const id = idByRef.get(t.ref);
    if (id === undefined) return [];
    return t.entries.map((e) => ({
      transfer_id: id,
      account: e.account,
      user_id: e.userId,
      amount_cents: e.amountCents.toString(),
    }));
  });
  await tx`insert into ledger_entries ${tx(rows)}`;
  return new Set(idByRef.keys());
}

export interface AuditInput {
  actor: string;
  action: string;
  entityType: string;
  entityId: string;
  data: Record<string, unknown>;
}

/** Rows per INSERT statement: postgres.js sends one parameter per column, and a statement takes at most 65,535. */
const AUDIT_ROWS_PER_STATEMENT_MAX = 5_000;

/**
 * Appends audit rows (the trigger chains the hashes). `data` is sent as a JSON object (bigints as
 * strings), so the jsonb column holds an object that `data->>'…'` can read.
 */
export async function insertAudit(tx: Tx, rows: readonly AuditInput[]): Promise<void> {
  for (let at = 0; at < rows.length; at += AUDIT_ROWS_PER_STATEMENT_MAX) {
    const chunk = rows.slice(at, at + AUDIT_ROWS_PER_STATEMENT_MAX).map((r) => ({
      actor: r.actor,
      action: r.action,
      entity_type: r.entityType,
      entity_id: r.entityId,
      data: JSON.parse(
        JSON.stringify(r.data, (_key, value: unknown) =>
          typeof value === 'bigint' ? value.toString() : value,
        ),
      ) as postgres.JSONValue,
    }));
    await tx`insert into audit_log ${tx(chunk)}`;
  }
}
