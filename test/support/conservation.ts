/**
 * The conservation check: after the ledger writer has drained the outbox, Postgres and Redis agree on
 * every user's money, the ledger explains every balance, and the audit chain is intact. Returns the
 * list of problems found (empty when everything holds), so a test can `expect(problems).toEqual([])`
 * and see exactly what broke.
 *
 * It assumes every hold and unsettled amount reached Postgres through the ledger (seed users with zero
 * unsettled debt when using it).
 */
import type { Sql } from '../../shared/db/client.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { ACCOUNT, userKeys } from '../../shared/redis/keys.ts';

export async function conservationProblems(
  sql: Sql,
  redis: Redis,
  prefix: string,
  userIds: readonly string[],
): Promise<string[]> {
  const problems: string[] = [];
  for (const userId of userIds) {
    const keys = userKeys(prefix, userId);
    const [account] = await sql<{ holds_cents: string; unsettled_cents: string }[]>`
      select holds_cents, unsettled_cents from credit_accounts where user_id = ${userId}`;
    const pgHolds = BigInt(account?.holds_cents ?? '0');
    const pgUnsettled = BigInt(account?.unsettled_cents ?? '0');
    const [redisHold, redisUns] = await redis.hmget(keys.account, ACCOUNT.holdsCents, ACCOUNT.unsettledCents);
    const rHolds = BigInt(redisHold ?? '0');
    const rUnsettled = BigInt(redisUns ?? '0');
    if (pgHolds !== rHolds) problems.push(`${userId}: holds Postgres ${pgHolds} ≠ Redis ${rHolds}`);
    if (pgUnsettled !== rUnsettled)
      problems.push(`${userId}: unsettled Postgres ${pgUnsettled} ≠ Redis ${rUnsettled}`);

    const sums = await sql<{ account: string; total: string }[]>`
      select account, coalesce(sum(amount_cents), 0)::text as total from ledger_entries
      where user_id = ${userId} and account in ('user_holds', 'user_unsettled') group by account`;
    const ledger = new Map(sums.map((row) => [row.account, BigInt(row.total)]));
    const ledgerHolds = ledger.get('user_holds') ?? 0n;
    const ledgerUnsettled = ledger.get('user_unsettled') ?? 0n;
    if (ledgerHolds !== pgHolds)
      problems.push(`${userId}: ledger user_holds ${ledgerHolds} ≠ credit_accounts ${pgHolds}`);
    if (ledgerUnsettled !== pgUnsettled) {
      problems.push(`${userId}: ledger user_unsettled ${ledgerUnsettled} ≠ credit_accounts ${pgUnsettled}`);
    }

    // Per authorization: Redis's hold equals Postgres's held_cents (open holds only on both sides).
    const redisHolds = await redis.hgetall(keys.holds);
    const pgOpen = await sql<{ id: string; held_cents: string }[]>`
      select id, held_cents from authorizations where user_id = ${userId} and held_cents <> 0`;
    const pgById = new Map(pgOpen.map((row) => [row.id, BigInt(row.held_cents)]));
    for (const id of new Set([...Object.keys(redisHolds), ...pgById.keys()])) {
      const r = BigInt(redisHolds[id] ?? '0');
      const p = pgById.get(id) ?? 0n;
      if (r !== p) problems.push(`${userId}: authorization ${id} held Redis ${r} ≠ Postgres ${p}`);
    }
    const [heldSum] = await sql<{ total: string }[]>`
      select coalesce(sum(held_cents), 0)::text as total from authorizations where user_id = ${userId}`;
    if (BigInt(heldSum?.total ?? '0') !== pgHolds) {
      problems.push(
        `${userId}: sum of authorizations.held_cents ${heldSum?.total} ≠ credit_accounts ${pgHolds}`,
      );
    }
  }

  const unbalanced = await sql<{ transfer_id: string; total: string }[]>`
    select transfer_id::text, sum(amount_cents)::text as total from ledger_entries group by transfer_id having sum(amount_cents) <> 0`;
  for (const row of unbalanced) problems.push(`transfer ${row.transfer_id} sums to ${row.total}, not 0`);
  const broken = await sql<
    { broken_id: string; problem: string }[]
  >`select broken_id::text, problem from audit_log_verify()`;
  for (const row of broken) problems.push(`audit_log ${row.broken_id}: ${row.problem}`);
  return problems;
}
