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
 * One column of a batch as a text[] parameter (postgres.js's own inference types an array by its first
 * element, which fails for a first element of null or a Date). The statement casts it:
 * `${texts(tx, ids)}::uuid[]`. Keep values as strings: bigint and booleans via toString/String.
 */
export function texts(
  tx: Tx,
  values: readonly (string | null)[],
): postgres.ArrayParameter<(string | null)[]> {
  return tx.array([...values], 25);
}

/**
 * Inserts the transfers that are new (by ref) and their entries, in the caller's transaction, in one
 * statement: the entries join the transfers that statement inserted, so a transfer already booked
 * (its ref taken) gets no entries again, and every transfer's entries are inserted together (the
 * balanced-ledger trigger checks them at the end of that statement). Returns the refs that were new.
 * Columns travel as arrays through unnest, so the statement text is the same for every batch size and
 * Postgres plans it once per connection.
 */
export async function insertTransfers(tx: Tx, transfers: readonly TransferInput[]): Promise<Set<string>> {
  const withEntries = transfers.filter((t) => t.entries.length > 0);
  if (withEntries.length === 0) return new Set();
  const entries = withEntries.flatMap((t) => t.entries.map((e) => ({ ref: t.ref, entry: e })));
  const inserted = await tx<{ ref: string }[]>`
    with t as (
      insert into ledger_transfers (ref, kind, user_id, authorization_id)
      select * from unnest(${texts(
        tx,
        withEntries.map((t) => t.ref),
      )}::text[], ${texts(
        tx,
        withEntries.map((t) => t.kind),
      )}::text[],
        ${texts(
          tx,
          withEntries.map((t) => t.userId),
        )}::uuid[], ${texts(
          tx,
          withEntries.map((t) => t.authorizationId),
        )}::text[])
      on conflict (ref) do nothing
      returning id, ref
    ), e as (
      insert into ledger_entries (transfer_id, account, user_id, amount_cents)
      select t.id, x.account, x.user_id, x.amount_cents
      from unnest(${texts(
        tx,
        entries.map((e) => e.ref),
      )}::text[], ${texts(
        tx,
        entries.map((e) => e.entry.account),
      )}::text[],
        ${texts(
          tx,
          entries.map((e) => e.entry.userId),
        )}::uuid[], ${texts(
          tx,
          entries.map((e) => e.entry.amountCents.toString()),
        )}::bigint[])
        with ordinality as x(ref, account, user_id, amount_cents, n)
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
      select actor, action, entity_type, entity_id, data::jsonb
      from unnest(${texts(
        tx,
        chunk.map((r) => r.actor),
      )}::text[], ${texts(
        tx,
        chunk.map((r) => r.action),
      )}::text[],
        ${texts(
          tx,
          chunk.map((r) => r.entityType),
        )}::text[], ${texts(
          tx,
          chunk.map((r) => r.entityId),
        )}::text[],
        ${texts(
          tx,
          chunk.map((r) => auditDataJson(r.data)),
        )}::text[])
        with ordinality as v(actor, action, entity_type, entity_id, data, n)
      order by v.n`;
  }
}

/** `data` as JSON text, bigints as strings. */
function auditDataJson(data: Record<string, unknown>): string {
  return JSON.stringify(data, (_key, value: unknown) =>
    typeof value === 'bigint' ? value.toString() : value,
  );
}
