/**
 * Double-entry movements. Every movement is one `ledger_transfers` row (unique `ref`, the natural
 * key that makes it idempotent) and a set of `ledger_entries` that sums to zero, inserted in one
 * statement (the database's trigger refuses an unbalanced set).
 *
 * Accounts (amounts in cents; per-user accounts carry the user id):
 * - `user_holds`        open authorization holds            ↔ `program_holds`
 * - `user_unsettled`    captured, not yet recorded on-chain ↔ `program_card_spend`
 * - `user_debt_onchain` recorded by the vault               ← `user_unsettled` (settlement)
 * - `user_refunds_held` refund cents held for review (beyond what was captured, or unlinked), negative
 *                       = possibly owed to the user; never spendable ↔ `program_card_spend`
 */
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
 * One column of a batch: its SQL type and how to read its value from a row, as text (bigints and
 * booleans via toString/String; a Date as an ISO string; null for NULL).
 */
export type Column<T> = readonly [sqlType: string, value: (row: T) => string | null];

const SQL_NAME = /^[a-z_]+$/;

/**
 * `unnest($1::type[], $2::type[], …) with ordinality as <alias>(<names>, n)` over `rows`: one text[]
 * parameter per column, cast in SQL, rows numbered in the order given. The statement text depends only
 * on the columns, never on the batch size, so each connection parses and plans it once, and a 500-row
 * batch binds a dozen parameters instead of thousands. (Text arrays, not postgres.js's own inference,
 * which types an array by its first element and fails for a first null or a Date, and sends a boolean
 * array as a scalar.) Column names and types are code, never data; they are checked all the same.
 */
export function unnestRows<T>(tx: Tx, rows: readonly T[], columns: Record<string, Column<T>>, alias = 'v') {
  const names = Object.keys(columns);
  for (const name of [alias, ...names]) if (!SQL_NAME.test(name)) throw new Error(`not an SQL name: ${name}`);
  const args = names
    .map((name) => {
      const [type, value] = columns[name]!;
      if (!SQL_NAME.test(type)) throw new Error(`not an SQL type: ${type}`);
      return tx`${tx.array(rows.map(value), 25)}::${tx.unsafe(type)}[]`;
    })
    .reduce((list, arg) => tx`${list}, ${arg}`);
  return tx`unnest(${args}) with ordinality as ${tx.unsafe(alias)}(${tx.unsafe(names.join(', '))}, n)`;
}

/**
 * Inserts the transfers that are new (by ref) and their entries, in the caller's transaction, in one
 * statement: the entries join the transfers that statement inserted, so a transfer already booked
 * (its ref taken) gets no entries again, and every transfer's entries are inserted together (the
 * balanced-ledger trigger checks them at the end of that statement). Returns the refs that were new.
 */
export async function insertTransfers(tx: Tx, transfers: readonly TransferInput[]): Promise<Set<string>> {
  const withEntries = transfers.filter((t) => t.entries.length > 0);
  if (withEntries.length === 0) return new Set();
  const entries = withEntries.flatMap((t) => t.entries.map((e) => ({ ref: t.ref, entry: e })));
  const inserted = await tx<{ ref: string }[]>`
    with t as (
      insert into ledger_transfers (ref, kind, user_id, authorization_id)
      select v.ref, v.kind, v.user_id, v.authorization_id
      from ${unnestRows(tx, withEntries, {
        ref: ['text', (t) => t.ref],
        kind: ['text', (t) => t.kind],
        user_id: ['uuid', (t) => t.userId],
        authorization_id: ['text', (t) => t.authorizationId],
      })}
      on conflict (ref) do nothing
      returning id, ref
    ), e as (
      insert into ledger_entries (transfer_id, account, user_id, amount_cents)
      select t.id, x.account, x.user_id, x.amount_cents
      from ${unnestRows(
        tx,
        entries,
        {
          ref: ['text', (e) => e.ref],
          account: ['text', (e) => e.entry.account],
          user_id: ['uuid', (e) => e.entry.userId],
          amount_cents: ['bigint', (e) => e.entry.amountCents.toString()],
        },
        'x',
      )}
      join t on t.ref = x.ref
      order by x.n
    )
    select ref from t`;
  return new Set(inserted.map((row) => row.ref));
}

export interface AuditInput {
  actor: string;
  action: string;
  entityType: string;
  entityId: string;
  data: Record<string, unknown>;
}

/** Rows per INSERT statement: bounds one statement's arrays (and the chain check's work) per call. */
const AUDIT_ROWS_PER_STATEMENT_MAX = 5_000;

/**
 * Appends audit rows (the triggers chain the hashes, one statement at a time). `data` is sent as a
 * JSON object (bigints as strings), so the jsonb column holds an object that `data->>'…'` can read.
 * Rows are chained in the order given.
 */
export async function insertAudit(tx: Tx, rows: readonly AuditInput[]): Promise<void> {
  for (let at = 0; at < rows.length; at += AUDIT_ROWS_PER_STATEMENT_MAX) {
    const chunk = rows.slice(at, at + AUDIT_ROWS_PER_STATEMENT_MAX);
    await tx`insert into audit_log (actor, action, entity_type, entity_id, data)
      select v.actor, v.action, v.entity_type, v.entity_id, v.data::jsonb
      from ${unnestRows(tx, chunk, {
        actor: ['text', (r) => r.actor],
        action: ['text', (r) => r.action],
        entity_type: ['text', (r) => r.entityType],
        entity_id: ['text', (r) => r.entityId],
        data: ['text', (r) => auditDataJson(r.data)],
      })}
      order by v.n`;
  }
}

/** `data` as JSON text, bigints as strings. */
function auditDataJson(data: Record<string, unknown>): string {
  return JSON.stringify(data, (_key, value: unknown) =>
    typeof value === 'bigint' ? value.toString() : value,
  );
}
