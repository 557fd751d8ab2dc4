/**
 * The liquidator's reconciliation: follows in-flight liquidations to their receipts — mined (confirmed
 * or failed), still pending, or lost after resendAfterMs (failed, and its nonce reused if still free).
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import type { Hex, LocalAccount, PublicClient } from 'viem';
import type { LiquidatorReport } from './index.ts';

export interface LiquidatorReconcileOptions {
  sql: postgres.Sql;
  client: PublicClient;
  account: LocalAccount;
  chainId: number;
  resendAfterMs: number;
  logger: Logger;
  /** The signer's reusable nonces (transactions.ts). */
  reusable: number[];
}

/** The reconciliation of one liquidator: `reconcile(report)`. */
export function createLiquidatorReconcile(options: LiquidatorReconcileOptions) {
  const { sql, client, account, chainId, resendAfterMs, logger, reusable } = options;
  /** Follows in-flight liquidations: mined (confirmed or failed), still pending, or lost. */
  const reconcile = async (report: LiquidatorReport): Promise<void> => {
    const sent = await sql<{ id: string; transaction_hash: string; nonce: number; age_ms: string }[]>`
      select id::text, transaction_hash, nonce, (extract(epoch from now() - updated_at) * 1000)::bigint::text as age_ms
      from liquidations where chain_id = ${chainId} and status = 'sent' order by liquidations.id`;
    for (const row of sent) {
      const receipt = await client
        .getTransactionReceipt({ hash: row.transaction_hash as Hex })
        .catch(() => null);
      if (receipt !== null) {
        const ok = receipt.status === 'success';
        await sql`update liquidations set status = ${ok ? 'confirmed' : 'failed'},
          last_error = ${ok ? null : 'reverted'}, updated_at = now() where id = ${row.id}`;
        if (ok) report.confirmed++;
        else report.failed++;
        continue;
      }
      if ((await client.getTransaction({ hash: row.transaction_hash as Hex }).catch(() => null)) !== null)
        continue;
      if (Number(row.age_ms) < resendAfterMs) continue;
      const used = await client.getTransactionCount({ address: account.address, blockTag: 'latest' });
      await sql`update liquidations set status = 'failed', last_error = 'transaction lost', updated_at = now()
        where id = ${row.id}`;
      report.failed++;
      // Its nonce is still free: the next send takes it, so this one can never be mined as well.
      if (used <= row.nonce) reusable.push(row.nonce);
      logger.warn({ hash: row.transaction_hash }, 'liquidation transaction lost; its nonce is reused');
    }
    reusable.sort((a, b) => a - b);
  };
  return reconcile;
}
