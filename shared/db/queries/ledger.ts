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
 * - `user_receivable_unlinked` captures of a user with no linked wallet ← `user_unsettled` (settlement)
 * - `program_repayments`, `program_liquidations` ↔ `user_debt_onchain` (the indexer)
 *
 * Every service books through `insertTransfers` and audits through `insertAudit`: the hot path's
 * fallback, the ledger writer, the indexer (settlements, refunds, repayments, liquidations, reorg
 * reversals), settlement (receivables) and the operators' scripts.
 */
import type { Sql, Tx } from '../client.ts';
import { unnestRows } from '../unnest.ts';

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
  /** The card authorization moved; absent (null) for chain movements. */
  authorizationId?: string | null;
  /** Empty: the transfer only takes its ref (no later transfer under that ref is ever booked). */
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
 * Inserts the transfers that are new (by ref) and their entries, in one statement: the entries join
 * the transfers that statement inserted, so a transfer already booked (its ref taken) gets no entries
 * again, and every transfer's entries are inserted together (the balanced-ledger trigger checks them at
 * the end of that statement, drizzle/0001). A transfer with no entries takes its ref and nothing else.
 * Transfers are inserted in the order given (callers that race sort them by ref, so concurrent
 * statements take the unique index's locks in one order). Returns the refs that were new.
 *
 * Needs INSERT on ledger_transfers and ledger_entries and SELECT on ledger_transfers (RETURNING), which
 * every booking role has (hot path, ledger writer, indexer, settlement, reconciliation).
 */
export async function insertTransfers(
  tx: Sql | Tx,
  transfers: readonly TransferInput[],
): Promise<Set<string>> {
  if (transfers.length === 0) return new Set();
  const entries = transfers.flatMap((t) => t.entries.map((e) => ({ ref: t.ref, entry: e })));
  const inserted = await tx<{ ref: string }[]>`
    with t as (
      insert into ledger_transfers (ref, kind, user_id, authorization_id)
      select v.ref, v.kind, v.user_id, v.authorization_id
      from ${unnestRows(tx, transfers, {
        ref: ['text', (t) => t.ref],
        kind: ['text', (t) => t.kind],
        user_id: ['uuid', (t) => t.userId],
        authorization_id: ['text', (t) => t.authorizationId ?? null],
      })}
      order by v.n
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

/** Entries of existing transfers, by ref, in booking order (a reorg reverses exactly what was booked). */
export async function ledgerEntriesByRef(
  sql: Sql | Tx,
  refs: readonly string[],
): Promise<Map<string, Entry[]>> {
  if (refs.length === 0) return new Map();
  const rows = await sql<{ ref: string; account: string; user_id: string | null; amount_cents: string }[]>`
    select t.ref, e.account, e.user_id::text, e.amount_cents::text
    from ledger_transfers t join ledger_entries e on e.transfer_id = t.id
    where t.ref = any(${[...refs]}::text[]) order by e.id`;
  const byRef = new Map<string, Entry[]>();
  for (const r of rows) {
    const list = byRef.get(r.ref) ?? [];
    list.push({ account: r.account, userId: r.user_id, amountCents: BigInt(r.amount_cents) });
    byRef.set(r.ref, list);
  }
  return byRef;
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
 * Appends audit rows (the triggers chain the hashes, one statement at a time, drizzle/0001). `data` is
 * sent as a JSON object (bigints as strings), so the jsonb column holds an object that `data->>'…'` can
 * read. Rows are chained in the order given. Pass a transaction when more than
 * AUDIT_ROWS_PER_STATEMENT_MAX rows must land together; on `sql` each statement commits on its own.
 * The statement locks the chain head until its transaction ends: in a transaction, audit last.
 */
export async function insertAudit(tx: Sql | Tx, rows: readonly AuditInput[]): Promise<void> {
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
