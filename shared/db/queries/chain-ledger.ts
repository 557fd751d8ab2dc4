/**
 * The chain services' ledger writes (settlement, refunds, repayments, liquidations, reorg reversals) and
 * their audit rows. TODO(issue 13, data access): one ledger writer with shared/db/queries/ledger.ts.
 */
import type postgres from 'postgres';

type Sql = postgres.Sql | postgres.TransactionSql;

export interface LedgerEntry {
  account: string;
  userId: string | null;
  amountCents: bigint;
}

export interface LedgerTransfer {
  ref: string;
  kind: 'settlement' | 'refund' | 'repayment' | 'liquidation' | 'adjustment';
  userId: string | null;
  entries: LedgerEntry[];
}

/**
 * Inserts transfers, then all their entries in ONE statement (the balance trigger checks per
 * statement). A transfer whose ref exists is skipped with its entries: refs make this idempotent.
 */
export async function insertLedgerTransfers(sql: Sql, transfers: readonly LedgerTransfer[]): Promise<number> {
  if (transfers.length === 0) return 0;
  const inserted = await sql<{ id: string; ref: string }[]>`
    insert into ledger_transfers (ref, kind, user_id)
    select r, k, u from unnest(${transfers.map((t) => t.ref)}::text[], ${transfers.map((t) => t.kind)}::text[],
      ${transfers.map((t) => t.userId)}::uuid[]) as x(r, k, u)
    on conflict (ref) do nothing
    returning id::text, ref`;
  if (inserted.length === 0) return 0;
  const idByRef = new Map(inserted.map((r) => [r.ref, r.id]));
  const ids: string[] = [];
  const accounts: string[] = [];
  const users: (string | null)[] = [];
  const amounts: string[] = [];
  for (const transfer of transfers) {
    const id = idByRef.get(transfer.ref);
    if (id === undefined) continue;
    for (const entry of transfer.entries) {
      ids.push(id);
      accounts.push(entry.account);
      users.push(entry.userId);
      amounts.push(entry.amountCents.toString());
    }
  }
  await sql`
    insert into ledger_entries (transfer_id, account, user_id, amount_cents)
    select t, a, u, c from unnest(${ids}::bigint[], ${accounts}::text[], ${users}::uuid[], ${amounts}::bigint[])
      as x(t, a, u, c)`;
  return inserted.length;
}

/** Entries of existing transfers, by ref (a reorg reverses exactly what was booked). */
export async function ledgerEntriesByRef(
  sql: Sql,
  refs: readonly string[],
): Promise<Map<string, LedgerEntry[]>> {
  if (refs.length === 0) return new Map();
  const rows = await sql<{ ref: string; account: string; user_id: string | null; amount_cents: string }[]>`
    select t.ref, e.account, e.user_id::text, e.amount_cents::text
    from ledger_transfers t join ledger_entries e on e.transfer_id = t.id
    where t.ref = any(${[...refs]}::text[]) order by e.id`;
  const byRef = new Map<string, LedgerEntry[]>();
  for (const r of rows) {
    const list = byRef.get(r.ref) ?? [];
    list.push({ account: r.account, userId: r.user_id, amountCents: BigInt(r.amount_cents) });
    byRef.set(r.ref, list);
  }
  return byRef;
}

export async function insertAudit(
  sql: Sql,
  entry: { actor: string; action: string; entityType: string; entityId: string; data: unknown },
): Promise<void> {
  await sql`
    insert into audit_log (actor, action, entity_type, entity_id, data)
    values (${entry.actor}, ${entry.action}, ${entry.entityType}, ${entry.entityId}, ${JSON.stringify(entry.data)}::text::jsonb)`;
}
