/**
 * The settlement worker's reconciliation: follows every `sent` transaction to its receipt — mined (the
 * indexer confirms it), still on its way, or lost or reverted and not recorded on-chain (back to
 * `pending`, or `failed` after SETTLEMENT_LIMITS.settlementAttemptsMax attempts).
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import type { Address, Hex, PublicClient } from 'viem';
import { credanaVaultAbi } from '../shared/chain/contracts/index.ts';
import { type Kind, type Nonces, refHash } from './kinds.ts';
import { SETTLEMENT_LIMITS } from './limits.ts';

export interface ReconcileOptions {
  sql: postgres.Sql;
  client: PublicClient;
  vault: Address;
  logger: Logger;
  batchMax: number;
  resendAfterMs: number;
  nonces: Nonces;
}

/** The reconciliation of one worker: `reconcile(kind)`. */
export function createReconcile({
  sql,
  client,
  vault,
  logger,
  batchMax,
  resendAfterMs,
  nonces,
}: ReconcileOptions) {
  const isRecorded = async (kind: Kind, ref: string): Promise<boolean> =>
    client.readContract({
      address: vault,
      abi: credanaVaultAbi,
      functionName: kind.recordedMap,
      args: [refHash(ref)],
    });

  /** Follows every `sent` transaction: mined, still pending, or lost (then back to `pending`). */
  const reconcile = async (kind: Kind): Promise<{ reopened: number; failed: number }> => {
    const sent = await sql<{ ref: string; transaction_hash: string; attempts: number; age_ms: string }[]>`
      select ref, transaction_hash, attempts, (extract(epoch from now() - updated_at) * 1000)::bigint::text as age_ms
      from ${sql(kind.table)} where status = 'sent' order by updated_at limit ${batchMax * 10}`;
    const byHash = new Map<string, (typeof sent)[number][]>();
    for (const row of sent)
      byHash.set(row.transaction_hash, [...(byHash.get(row.transaction_hash) ?? []), row]);
    let reopened = 0;
    let failed = 0;
    for (const [hash, rows] of byHash) {
      const receipt = await client.getTransactionReceipt({ hash: hash as Hex }).catch(() => null);
      if (receipt !== null && receipt.status === 'success') continue; // the indexer will confirm
      if (receipt === null) {
        const known = await client.getTransaction({ hash: hash as Hex }).catch(() => null);
        const youngest = Math.min(...rows.map((r) => Number(r.age_ms)));
        if (known !== null || youngest < resendAfterMs) continue; // still on its way
      }
      const reason =
        receipt === null ? 'transaction lost (not mined, unknown to the node)' : 'transaction reverted';
      for (const row of rows) {
        if (await isRecorded(kind, row.ref)) continue; // recorded by another attempt: the indexer will confirm
        const give = row.attempts >= SETTLEMENT_LIMITS.settlementAttemptsMax;
        await sql`update ${sql(kind.table)} set status = ${give ? 'failed' : 'pending'}, last_error = ${reason},
          updated_at = now() where ref = ${row.ref} and status = 'sent'`;
        if (give) failed++;
        else reopened++;
      }
      nonces.reset(); // a lost or reverted transaction may have left a gap: ask the node again
      logger.warn(
        { hash, kind: kind.name, refs: rows.map((r) => r.ref), reason },
        'settlement transaction not recorded; re-sending',
      );
    }
    return { reopened, failed };
  };

  return reconcile;
}
