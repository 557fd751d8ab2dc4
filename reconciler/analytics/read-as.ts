/**
 * Analytics ingestion reads the financial database as `credana_analytics` (drizzle/0012): every row,
 * but only pseudonymous columns — user ids and amounts; no wallet addresses, merchant names, card
 * details or Stripe payloads. The scheduler connects as `credana_reconciliation` (a member of that
 * role), so a run switches one connection to it for its reads, whichever server (the replica or the
 * primary) answers: a query that reached for a hidden column fails with `permission denied` instead of
 * copying it into the analytics store.
 */
import type { Sql } from '../../shared/db/client.ts';

export const ANALYTICS_READ_ROLE = 'credana_analytics';

/**
 * Runs `fn` on one connection of `sql` switched to `credana_analytics`, and switches it back before the
 * connection returns to the pool.
 *
 * @example
 * const counts = await readAsAnalytics(await replica.read(), (financial) => refreshAnalytics({ financial, … }));
 */
export async function readAsAnalytics<T>(sql: Sql, fn: (financial: Sql) => Promise<T>): Promise<T> {
  const reserved = await sql.reserve();
  let restored = false;
  try {
    await reserved`set role credana_analytics`;
    return await fn(reserved);
  } finally {
    try {
      await reserved`reset role`;
      restored = true;
    } catch {
      // The connection is gone or in an unknown state: it is never handed back to the pool, where
      // another job would run under the wrong role.
    }
    if (restored) reserved.release();
  }
}
