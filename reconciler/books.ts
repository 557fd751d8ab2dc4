/**
 * Job `books`: the ledger proves itself, in three phases, each resumable.
 *
 * 1. transfers — every ledger transfer's entries sum to zero, and every transfer has entries
 *    (scanned in id ranges of `transfersPerBatch`).
 * 2. users — every user's balances equal the fold of their entries: credit_accounts.holds_cents =
 *    Σ user_holds = Σ authorizations.held_cents; unsettled_cents = Σ user_unsettled; and the on-chain
 *    debt in the ledger (cents) covers debt_onchain_usdc, exceeding it by less than one cent per debt
 *    reduction (the indexer books reductions rounded down to cents, ARCHITECTURE §2 favours solvency).
 * 3. audit — the audit log's hash chain: each row's prev_hash is the previous row's hash and its hash
 *    is audit_log_row_hash of its content; the last row is the recorded head. Rows are re-hashed in
 *    batches in SQL (audit_log_row_hash), linked in TypeScript, so a pass is bounded and resumable
 *    (audit_log_verify() walks the whole log in one statement).
 *
 * Reports only: the books are append-only, and a correction is a new adjustment transfer a person
 * decides on. The cursor is JSON `{ phase, after, prevHash }`.
 */
import { z } from 'zod';
import type { Sql } from '../shared/db/client.ts';
import { USDC_PER_CENT } from '../shared/money.ts';
import { limits } from './limits.ts';
import { type Finding, type JobContext, type JobOutcome, NIL_UUID } from './types.ts';

export interface BooksJobOptions {
  transfersPerBatch?: number;
  usersPerBatch?: number;
  auditRowsPerBatch?: number;
  rowsPerRunMax?: number;
  runTimeMaxMs?: number;
}

const cursorSchema = z.object({
  phase: z.enum(['transfers', 'users', 'audit']),
  after: z.string().max(64),
  prevHash: z.string().max(128).nullable(),
});
type BooksCursor = z.infer<typeof cursorSchema>;

const START: BooksCursor = { phase: 'transfers', after: '0', prevHash: null };

export function parseBooksCursor(text: string | null): BooksCursor {
  if (text === null) return START;
  const parsed = cursorSchema.safeParse(JSON.parse(text));
  return parsed.success ? parsed.data : START;
}

export function booksJob(options: BooksJobOptions = {}) {
  const transfersPerBatch = options.transfersPerBatch ?? limits.transfersPerBatch;
  const usersPerBatch = options.usersPerBatch ?? limits.usersPerBatch;
  const auditPerBatch = options.auditRowsPerBatch ?? limits.auditRowsPerBatch;
  const rowsMax = options.rowsPerRunMax ?? limits.booksRowsPerRunMax;
  const timeMaxMs = options.runTimeMaxMs ?? limits.runTimeMaxMs;

  return async (ctx: JobContext): Promise<JobOutcome> => {
    const { sql, now } = ctx;
    const startedMs = now();
    const findings: Finding[] = [];
    let checked = 0;
    let cursor = parseBooksCursor(ctx.cursor);
    const stop = () => checked >= rowsMax || now() - startedMs >= timeMaxMs;

    while (!stop()) {
      if (cursor.phase === 'transfers') {
        const [top] = await sql<{ max: string | null }[]>`select max(id)::text as max from ledger_transfers`;
        const from = BigInt(cursor.after);
        if (top?.max == null || from >= BigInt(top.max)) {
          cursor = { phase: 'users', after: NIL_UUID, prevHash: null };
          continue;
        }
        const to = from + BigInt(transfersPerBatch);
        const bad = await sql<{ id: string; ref: string; total: string; entries: number }[]>`
          select t.id::text, t.ref, coalesce(sum(e.amount_cents), 0)::text as total, count(e.id)::int as entries
          from ledger_transfers t left join ledger_entries e on e.transfer_id = t.id
          where t.id > ${from.toString()} and t.id <= ${to.toString()}
          group by t.id, t.ref
          having count(e.id) = 0 or sum(e.amount_cents) <> 0`;
        for (const row of bad) {
          findings.push(
            row.entries === 0
              ? { kind: 'transfer_without_entries', transferId: row.id, ref: row.ref }
              : { kind: 'transfer_unbalanced', transferId: row.id, ref: row.ref, sumCents: row.total },
          );
        }
        const [count] = await sql<{ n: number }[]>`
          select count(*)::int as n from ledger_transfers where id > ${from.toString()} and id <= ${to.toString()}`;
        checked += count?.n ?? 0;
        cursor = { ...cursor, after: to.toString() };
      } else if (cursor.phase === 'users') {
        const users = await sql<{ id: string }[]>`
          select user_id::text as id from credit_accounts where user_id > ${cursor.after}::uuid order by user_id limit ${usersPerBatch}`;
        if (users.length === 0) {
          cursor = { phase: 'audit', after: '0', prevHash: null };
          continue;
        }
        findings.push(
          ...(await checkUserBalances(
            sql,
            users.map((u) => u.id),
          )),
        );
        checked += users.length;
        cursor = { ...cursor, after: users[users.length - 1]!.id };
      } else {
        const rows = await sql<{ id: string; prev_hash: string; hash: string; recomputed: string }[]>`
          select id::text, prev_hash, hash,
            audit_log_row_hash(prev_hash, id, at, actor, action, entity_type, entity_id, data) as recomputed
          from audit_log where audit_log.id > ${cursor.after} order by audit_log.id limit ${auditPerBatch}`;
        let prev = cursor.prevHash;
        if (prev === null && cursor.after !== '0') {
          const [p] = await sql<{ hash: string }[]>`select hash from audit_log where id = ${cursor.after}`;
          prev = p?.hash ?? '';
        }
        for (const row of rows) {
          if (row.prev_hash !== (prev ?? '')) {
            findings.push({
              kind: 'audit_chain_broken',
              auditId: row.id,
              problem: 'prev_hash does not match the previous row',
            });
          }
          if (row.hash !== row.recomputed) {
            findings.push({
              kind: 'audit_row_tampered',
              auditId: row.id,
              problem: 'hash does not match the row content',
            });
          }
          // Continue the chain from the stored hash, so one tampered row is one finding, not all after it.
          prev = row.hash;
        }
        checked += rows.length;
        if (rows.length < auditPerBatch) {
          const [head] = await sql<{ last_id: string; last_hash: string }[]>`
            select last_id::text, last_hash from audit_log_head where singleton`;
          const lastId = rows.length > 0 ? rows[rows.length - 1]!.id : cursor.after;
          if (head !== undefined && (head.last_hash !== (prev ?? '') || head.last_id !== lastId)) {
            findings.push({
              kind: 'audit_head_mismatch',
              auditId: head.last_id,
              problem: 'the last row is not the chain head: rows are missing at the end',
            });
          }
          return { checked, findings, repairs: 0, cursor: null };
        }
        cursor = { phase: 'audit', after: rows[rows.length - 1]!.id, prevHash: prev };
      }
      await ctx.checkpoint({ cursor: JSON.stringify(cursor), checked });
    }
    return { checked, findings, repairs: 0, cursor: JSON.stringify(cursor) };
  };
}

/** One statement per batch of users: their balances against the fold of their entries. */
async function checkUserBalances(sql: Sql, userIds: string[]): Promise<Finding[]> {
  const rows = await sql<
    {
      user_id: string;
      holds_cents: string;
      unsettled_cents: string;
      debt_usdc: string;
      ledger_holds: string;
      ledger_unsettled: string;
      ledger_debt: string;
      debt_reductions: number;
      authorization_holds: string;
    }[]
  >`
    select c.user_id::text, c.holds_cents::text, c.unsettled_cents::text, c.debt_onchain_usdc::text as debt_usdc,
      coalesce(e.holds, 0)::text as ledger_holds, coalesce(e.unsettled, 0)::text as ledger_unsettled,
      coalesce(e.debt, 0)::text as ledger_debt, coalesce(r.n, 0)::int as debt_reductions,
      coalesce(a.held, 0)::text as authorization_holds
    from credit_accounts c
    left join (
      select user_id,
        sum(amount_cents) filter (where account = 'user_holds') as holds,
        sum(amount_cents) filter (where account = 'user_unsettled') as unsettled,
        sum(amount_cents) filter (where account = 'user_debt_onchain') as debt
      from ledger_entries where user_id = any(${userIds}::uuid[]) group by user_id
    ) e on e.user_id = c.user_id
    left join (
      select user_id, count(*) as n from ledger_transfers
      where user_id = any(${userIds}::uuid[]) and kind in ('repayment', 'liquidation') group by user_id
    ) r on r.user_id = c.user_id
    left join (
      select user_id, sum(held_cents) as held from authorizations where user_id = any(${userIds}::uuid[]) group by user_id
    ) a on a.user_id = c.user_id
    where c.user_id = any(${userIds}::uuid[])
    order by c.user_id`;
  const findings: Finding[] = [];
  for (const row of rows) {
    const base = { userId: row.user_id };
    if (row.holds_cents !== row.ledger_holds) {
      findings.push({
        kind: 'balance_mismatch',
        ...base,
        account: 'user_holds',
        balanceCents: row.holds_cents,
        ledgerCents: row.ledger_holds,
      });
    }
    if (row.holds_cents !== row.authorization_holds) {
      findings.push({
        kind: 'holds_mismatch',
        ...base,
        balanceCents: row.holds_cents,
        authorizationsCents: row.authorization_holds,
      });
    }
    if (row.unsettled_cents !== row.ledger_unsettled) {
      findings.push({
        kind: 'balance_mismatch',
        ...base,
        account: 'user_unsettled',
        balanceCents: row.unsettled_cents,
        ledgerCents: row.ledger_unsettled,
      });
    }
    // ledger cents × 10⁴ ≥ debt in USDC units, and exceeds it by less than one cent per reduction.
    const ledgerUsdc = BigInt(row.ledger_debt) * USDC_PER_CENT;
    const debtUsdc = BigInt(row.debt_usdc);
    const slack = BigInt(row.debt_reductions) * USDC_PER_CENT;
    if (ledgerUsdc < debtUsdc || ledgerUsdc - debtUsdc > slack) {
      findings.push({
        kind: 'balance_mismatch',
        ...base,
        account: 'user_debt_onchain',
        debtOnchainUsdc: row.debt_usdc,
        ledgerCents: row.ledger_debt,
      });
    }
  }
  return findings;
}
