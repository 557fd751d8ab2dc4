/**
 * The settlement worker's send: one batch of pending rows of a kind — rows of users without a wallet set
 * aside first (booked receivable, or a refund failed) — held back while the base fee is above the cap,
 * else signed, SAVED as `sent` with its hash and nonce, then broadcast, then followed to its receipt.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import {
  type Address,
  encodeFunctionData,
  type Hex,
  keccak256,
  type LocalAccount,
  type PublicClient,
} from 'viem';
import { credanaVaultAbi } from '../shared/chain/contracts/index.ts';
import { createFeeCap } from '../shared/chain/fees.ts';
import { classifyRpcError } from '../shared/chain/rpc/index.ts';
import { vaultAccountsOf } from '../shared/db/queries/chain.ts';
import type { SettlementReport, SettlementWorkerOptions } from './index.ts';
import type { Kind, Nonces, PendingRow } from './kinds.ts';
import type { SettlementMetrics } from './metrics.ts';

export interface SendBatchOptions {
  options: SettlementWorkerOptions;
  sql: postgres.Sql;
  client: PublicClient;
  account: LocalAccount;
  vault: Address;
  logger: Logger;
  metrics: SettlementMetrics;
  batchMax: number;
  receiptTimeoutMs: number;
  nonces: Nonces;
  bookReceivable: (row: PendingRow) => Promise<boolean>;
}

/** The sends of one worker: `sendBatch(kind, report)`. */
export function createSendBatch(deps: SendBatchOptions) {
  const { options, sql, client, account, vault, logger, metrics, batchMax, nonces } = deps;

  const feeCap = createFeeCap({
    client,
    maxFeePerGasWei: options.maxFeePerGasWei,
    logger,
    aboveCap: metrics.feeAboveCap,
    waits: metrics.feeCapWaits,
    what: 'settlement',
  });

  /**
   * Signs, saves, broadcasts and awaits one batch of pending rows of `kind`. Returns how many were
   * sent, or -1 when the fee cap held the batch back.
   */
  const sendBatch = async (kind: Kind, report: SettlementReport): Promise<number> => {
    const pending = await sql<PendingRow[]>`
      select ref, user_id::text, amount_usdc::text, attempts from ${sql(kind.table)}
      where status = 'pending' order by created_at, ref limit ${batchMax}`;
    if (pending.length === 0) return 0;
    const accountOf = await vaultAccountsOf(
      sql,
      options.chainId,
      pending.map((p) => p.user_id),
    );
    await setAsideWalletless(deps, kind, pending, accountOf, report);
    const batch = pending.filter((p) => accountOf.has(p.user_id));
    if (batch.length === 0) return 0;
    const fees = await feeCap.fees();
    if (fees === null) return -1;

    const data = encodeFunctionData({
      abi: credanaVaultAbi,
      functionName: kind.functionName,
      args: [
        batch.map((p) => accountOf.get(p.user_id) as Address),
        batch.map((p) => BigInt(p.amount_usdc)),
        batch.map((p) => p.ref),
      ],
    });
    const nonce = await nonces.take();
    let serialized: Hex;
    try {
      serialized = await account.signTransaction({
        type: 'eip1559',
        chainId: options.chainId,
        nonce,
        to: vault,
        data,
        // A recorded spend costs about 60k gas; a generous fixed budget saves an estimate round trip.
        gas: 100_000n + 90_000n * BigInt(batch.length),
        ...fees,
      });
    } catch (error) {
      // The signer failed (an HSM unreachable or refusing): nothing was saved or sent with this nonce,
      // so it is not spent. Kept as taken, the next transaction would leave a gap no later one passes.
      nonces.reset();
      throw error;
    }
    const hash = keccak256(serialized);
    const refs = batch.map((p) => p.ref);
    // Saved before the broadcast: from here on, a crash leaves a row that names this transaction.
    await sql`update ${sql(kind.table)} set status = 'sent', transaction_hash = ${hash}, nonce = ${nonce},
      attempts = attempts + 1, last_error = null, updated_at = now()
      where ref = any(${refs}::text[]) and status = 'pending'`;
    await options.afterSave?.(hash);
    try {
      await client.sendRawTransaction({ serializedTransaction: serialized });
    } catch (error) {
      // The node refused it (nonce, funds, fees): nothing is on the wire, so the batch is pending again.
      nonces.reset();
      const problem = classifyRpcError(error);
      await sql`update ${sql(kind.table)} set status = 'pending', last_error = ${problem.code}, updated_at = now()
        where ref = any(${refs}::text[]) and status = 'sent' and transaction_hash = ${hash}`;
      throw error;
    }
    metrics.batchesSent.inc({ kind: kind.name });
    await options.afterBroadcast?.(hash, kind.name);
    logger.info({ hash, nonce, kind: kind.name, refs: refs.length }, 'settlement batch broadcast');
    await followReceipt(deps, hash);
    return batch.length;
  };

  return sendBatch;
}

/**
 * Sets aside the rows of users without a linked wallet on this chain: a spend is booked as a receivable,
 * a refund is marked failed (its capture went to the receivable account: a person settles both).
 */
async function setAsideWalletless(
  deps: SendBatchOptions,
  kind: Kind,
  pending: PendingRow[],
  accountOf: Map<string, Address>,
  report: SettlementReport,
): Promise<void> {
  const { sql, logger, bookReceivable } = deps;
  for (const orphan of pending.filter((p) => !accountOf.has(p.user_id))) {
    if (kind.name === 'spend') {
      if (await bookReceivable(orphan)) report.receivables++;
    } else {
      // Its capture went to the receivable account: a person settles both.
      await sql`update chain_refunds set status = 'failed', last_error = 'no linked wallet on this chain',
        updated_at = now() where ref = ${orphan.ref} and status = 'pending'`;
      logger.error(
        { alert: 'refund_without_wallet', ref: orphan.ref, userId: orphan.user_id },
        'refund of a user without a linked wallet cannot reach the chain',
      );
    }
  }
}

/** Waits for a broadcast batch's receipt, logging a revert or a timeout; the reconcile follows up either way. */
async function followReceipt(deps: SendBatchOptions, hash: Hex): Promise<void> {
  const { client, logger, receiptTimeoutMs } = deps;
  try {
    const receipt = await client.waitForTransactionReceipt({
      hash,
      timeout: receiptTimeoutMs,
      pollingInterval: 100,
    });
    if (receipt.status !== 'success')
      logger.error({ hash }, 'settlement batch reverted; reconcile will re-send');
  } catch {
    // Not knowing the receipt now loses nothing: the reconcile reads the transaction from the chain.
    logger.warn({ hash }, 'no receipt yet; reconcile will follow the transaction');
  }
}
