/**
 * A capture that cannot reach the chain: its user has no linked wallet, so no vault account to record it
 * on. It is booked to the receivable account instead, counted and raised as an alert.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { chainStateOfUsers } from '../shared/db/queries/chain.ts';
import { addToCreditAccounts } from '../shared/db/queries/credit-accounts.ts';
import { insertTransfers } from '../shared/db/queries/ledger.ts';
import { writeChainState } from '../shared/redis/account.ts';
import type { Redis } from '../shared/redis/client.ts';
import type { PendingRow } from './kinds.ts';
import type { SettlementMetrics } from './metrics.ts';

export interface ReceivableOptions {
  sql: postgres.Sql;
  logger: Logger;
  metrics: SettlementMetrics;
  /** When given, a receivable booking moves the cached unsettled cents too (else a rebuild does). */
  redis?: { client: Redis; prefix: string } | undefined;
}

/** Books receivables for one worker: `bookReceivable(row)`, true when this call booked it. */
export function createBookReceivable(options: ReceivableOptions) {
  const { sql, logger, metrics } = options;

  /**
   * A capture of a user with no linked wallet has no vault account to record it on: it leaves
   * unsettled for the receivable account (`user_unsettled` → `user_receivable_unlinked`, one transfer
   * `receivable:<capture>`), in one transaction with the row's status, and raises an alert.
   */
  const bookReceivable = async (row: PendingRow): Promise<boolean> => {
    const booked = await sql.begin(async (tx) => {
      const [claimed] = await tx<{ amount_cents: string }[]>`
        update settlements set status = 'receivable', last_error = 'no linked wallet on this chain',
          updated_at = now() where ref = ${row.ref} and status = 'pending' returning amount_cents::text`;
      if (claimed === undefined) return null;
      const cents = BigInt(claimed.amount_cents);
      await insertTransfers(tx, [
        {
          ref: `receivable:${row.ref}`,
          kind: 'adjustment',
          userId: row.user_id,
          entries: [
            { account: 'user_unsettled', userId: row.user_id, amountCents: -cents },
            { account: 'user_receivable_unlinked', userId: row.user_id, amountCents: cents },
          ],
        },
      ]);
      await addToCreditAccounts(tx, [{ userId: row.user_id, unsettledCents: -cents }]);
      return cents;
    });
    if (booked === null) return false;
    metrics.receivables.inc();
    metrics.receivableCents.inc(Number(booked));
    logger.error(
      { alert: 'settlement_receivable', ref: row.ref, userId: row.user_id, cents: booked.toString() },
      'capture of a user without a linked wallet booked to user_receivable_unlinked',
    );
    if (options.redis !== undefined) {
      const [state] = await chainStateOfUsers(sql, [row.user_id]);
      if (state !== undefined) {
        await writeChainState(options.redis.client, options.redis.prefix, row.user_id, {
          ...state,
          unsettledCentsDelta: { eventKey: `receivable:${row.ref}`, amountCents: -booked },
        }).catch((error: unknown) =>
          logger.warn({ err: error, userId: row.user_id }, 'cached unsettled not moved; a rebuild will'),
        );
      }
    }
    return true;
  };

  return bookReceivable;
}
