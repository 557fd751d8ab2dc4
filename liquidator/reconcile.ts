/**
 * The liquidator's reconciliation: follows every liquidation in flight (`sent` or `mined`) to a receipt
 * CHAIN_CONFIRMATIONS deep, each round, from the chain itself:
 *
 * | row        | the chain says                                   | becomes                               |
 * | ---------- | ------------------------------------------------ | ------------------------------------- |
 * | sent       | a receipt, not yet deep                          | mined                                 |
 * | sent/mined | a receipt `confirmations` deep                   | confirmed (success) / failed reverted |
 * | mined      | no receipt (its block was orphaned by a reorg)   | sent, last_error `orphaned by a reorg`|
 * | confirmed, | no receipt (a reorg deeper than the confirmations| sent, last_error `orphaned by a reorg`|
 * | block within REORG_DEPTH_MAX | the indexer also undoes)       | (once no other row of the user flies) |
 * | sent       | no receipt, the node still knows the transaction | sent (it may be mined, or re-mined)   |
 * | sent       | no receipt, unknown to the node, resendAfterMs   | failed (`transaction lost`, or        |
 * |            |                                                  | `orphaned by a reorg`), nonce reused  |
 * |            |                                                  | if still free                         |
 *
 * A row in flight keeps its user out of the scan (index.ts), so a liquidation whose block a reorg
 * dropped is never decided again while it may still be re-mined; once it is failed, the account is
 * judged afresh on the canonical chain. The confirmed rows are re-read over the same window the
 * indexer undoes reorgs in (REORG_DEPTH_MAX), so the table follows the chain as far as the books do.
 * `liquidator_liquidations_confirmed_total` counts a row once, the first time it is deep.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import {
  type Hex,
  type LocalAccount,
  type PublicClient,
  type TransactionReceipt,
  TransactionReceiptNotFoundError,
} from 'viem';
import { confirmedTipOf } from '../shared/chain/confirmations.ts';
import type { LiquidatorReport } from './index.ts';
import { LIQUIDATOR_LIMITS } from './limits.ts';
import type { LiquidatorMetrics } from './metrics.ts';

/** last_error of a liquidation whose mined block a reorg dropped (kept when it is then failed). */
export const ORPHANED_BY_REORG = 'orphaned by a reorg';

export interface LiquidatorReconcileOptions {
  sql: postgres.Sql;
  client: PublicClient;
  account: LocalAccount;
  chainId: number;
  resendAfterMs: number;
  /** CHAIN_CONFIRMATIONS: how deep a receipt must be before its row is confirmed (or failed). */
  confirmations: number;
  /** REORG_DEPTH_MAX: confirmed rows whose block is this close to the head are re-read each round. */
  reorgDepthMax: number;
  metrics: LiquidatorMetrics;
  logger: Logger;
  /** The signer's reusable nonces (transactions.ts). */
  reusable: number[];
  /** Forgets the signer's cached next nonce: the next send asks the node (transactions.ts). */
  resetNonce: () => void;
}

/** A liquidation in flight, or confirmed within the reorg window, as reconcile reads it. */
export interface FollowedLiquidation {
  id: string;
  transaction_hash: string;
  nonce: number;
  status: 'sent' | 'mined' | 'confirmed';
  age_ms: string;
  last_error: string | null;
}

/** The reconciliation of one liquidator: `reconcile(report)`, and `settle` for one fresh receipt. */
export function createLiquidatorReconcile(options: LiquidatorReconcileOptions) {
  const { sql, client, chainId, logger, metrics } = options;

  /** The receipt, null when the node has none, 'unreachable' when it could not be asked. */
  const readReceipt = async (hash: Hex): Promise<TransactionReceipt | null | 'unreachable'> => {
    try {
      return await client.getTransactionReceipt({ hash });
    } catch (error) {
      if (error instanceof TransactionReceiptNotFoundError) return null;
      logger.warn({ err: error, hash }, 'liquidation receipt not readable; followed next round');
      return 'unreachable';
    }
  };

  /**
   * Records a receipt of a row in flight: `mined` while its block is shallower than `confirmations`,
   * then `confirmed` (counted once, here) or `failed` (reverted). `head` is the chain's head.
   */
  const settle = async (
    row: Pick<FollowedLiquidation, 'id' | 'status' | 'transaction_hash'>,
    receipt: TransactionReceipt,
    head: bigint,
    report: LiquidatorReport,
  ): Promise<void> => {
    const block = receipt.blockNumber.toString();
    if (row.status === 'confirmed') {
      // Still on the canonical chain (perhaps re-mined in another block): nothing to do but note where.
      await sql`update liquidations set block_number = ${block} where id = ${row.id} and status = 'confirmed'
        and block_number is distinct from ${block}`;
      return;
    }
    if (receipt.blockNumber > confirmedTipOf(head, options.confirmations)) {
      await sql`update liquidations set status = 'mined', block_number = ${block}, last_error = null,
        updated_at = now() where id = ${row.id} and status in ('sent', 'mined')
        and (status = 'sent' or block_number is distinct from ${block})`;
      return;
    }
    const ok = receipt.status === 'success';
    // `first`: confirmed_at set by this statement (now() is the statement's transaction time), i.e. a row
    // confirmed for the first time; one re-mined after a reorg is not counted twice.
    const [done] = await sql<
      { first: boolean }[]
    >`update liquidations set status = ${ok ? 'confirmed' : 'failed'},
      last_error = ${ok ? null : 'reverted'}, block_number = ${block},
      confirmed_at = ${ok ? sql`coalesce(confirmed_at, now())` : sql`confirmed_at`}, updated_at = now()
      where id = ${row.id} and status in ('sent', 'mined') returning confirmed_at = now() as first`;
    if (done === undefined) return;
    if (!ok) {
      report.failed++;
      return;
    }
    report.confirmed++;
    if (done.first) metrics.confirmed.inc();
  };

  /** A row whose transaction has no receipt: orphaned (if mined or confirmed), on its way, or lost. */
  const followUnmined = async (row: FollowedLiquidation, report: LiquidatorReport): Promise<void> => {
    const hash = row.transaction_hash as Hex;
    if (row.status !== 'sent') {
      // Its block left the canonical chain. Followed as `sent` again: the node may mine it anew from
      // its mempool. The cached nonce is ahead of the chain's now, so the next send asks the node. A
      // confirmed row waits while a later liquidation of the user is in flight (one per user).
      const [reopened] =
        await sql`update liquidations l set status = 'sent', last_error = ${ORPHANED_BY_REORG},
          block_number = null, updated_at = now()
        where l.id = ${row.id} and l.status = ${row.status} and not exists (
          select 1 from liquidations o where o.chain_id = l.chain_id and o.user_id = l.user_id
            and o.id <> l.id and o.status in ('sent', 'mined'))
        returning l.id`;
      if (reopened === undefined) return;
      options.resetNonce();
      report.orphaned++;
      metrics.orphaned.inc();
      logger.warn(
        { hash, nonce: row.nonce, was: row.status },
        'liquidation orphaned by a reorg; followed again',
      );
      return;
    }
    if ((await client.getTransaction({ hash }).catch(() => null)) !== null) return;
    if (Number(row.age_ms) < options.resendAfterMs) return;
    // Free means neither mined nor waiting at the node: then no later send of ours holds it.
    const used = await client.getTransactionCount({ address: options.account.address, blockTag: 'pending' });
    const reason = row.last_error === ORPHANED_BY_REORG ? ORPHANED_BY_REORG : 'transaction lost';
    const [failed] =
      await sql`update liquidations set status = 'failed', last_error = ${reason}, updated_at = now()
      where id = ${row.id} and status = 'sent' returning id`;
    if (failed === undefined) return;
    report.failed++;
    // Its nonce is still free: the next send takes it, so this one can never be mined as well.
    if (used <= row.nonce && !options.reusable.includes(row.nonce)) options.reusable.push(row.nonce);
    logger.warn({ hash, reason }, 'liquidation transaction gone; its nonce is reused if free');
  };

  /** Follows every liquidation in flight, and the confirmed ones a reorg may still drop, oldest first. */
  const reconcile = async (report: LiquidatorReport): Promise<void> => {
    const head = await client.getBlockNumber({ cacheTime: 0 });
    const windowLow = head - BigInt(options.reorgDepthMax);
    const rows = await sql<FollowedLiquidation[]>`
      select id::text, transaction_hash, nonce, status, last_error,
        (extract(epoch from now() - updated_at) * 1000)::bigint::text as age_ms
      from liquidations where chain_id = ${chainId} and (status in ('sent', 'mined')
        or (status = 'confirmed' and block_number > ${windowLow.toString()}))
      order by id limit ${LIQUIDATOR_LIMITS.liquidationFollowedRowsMax}`;
    for (const row of rows) {
      const receipt = await readReceipt(row.transaction_hash as Hex);
      if (receipt === 'unreachable') continue;
      if (receipt === null) await followUnmined(row, report);
      else await settle(row, receipt, head, report);
    }
    options.reusable.sort((a, b) => a - b);
  };

  return { reconcile, settle };
}
