/**
 * The settlement worker: records captured card spend on-chain with `recordSpends` and credited card
 * refunds with `recordRefunds`, in batches, from the settler's own key (its own nonces), and follows
 * each transaction to its receipt. Nothing is sent while the chain's base fee is above the configured
 * max fee per gas (the worker waits, and says so in `settlement_fee_above_cap`). A capture of a user
 * without a linked wallet cannot reach the chain: it is booked to the receivable account
 * (`user_receivable_unlinked`), counted and logged as an alert, never left `failed`.
 *
 * Exactly once, even across crashes, by three layers:
 * 1. One `settlements` row per capture (primary key = capture id), created before anything is sent.
 * 2. The signed transaction's hash and nonce are saved (status `sent`) BEFORE it is broadcast. A crash
 *    after saving leaves a row that says what may be on the wire; on restart the worker looks the hash
 *    up: mined → nothing to do; unknown after `resendAfterMs` and not recorded on-chain → sent again.
 * 3. The vault itself records a ref at most once (`recordSpends` skips a ref already recorded), so
 *    even a worker that lost its own records cannot record a capture twice.
 * The indexer, not this worker, marks a settlement `confirmed`: when it applies the vault's
 * `SpendRecorded` event and moves the amount from unsettled to on-chain debt, in one transaction.
 *
 * Input (what the ledger writer produces): `ledger_transfers` of kind 'capture' with a user, whose
 * `user_unsettled` entries sum to the captured cents. The capture id is the ref's suffix for
 * `capture:<ipi>`, or, for `lifecycle:<evt>`, the Stripe event's object id (`card_events.object_id`,
 * an `ipi_…`); anything else settles under the transfer's own ref. Refunds: `ledger_transfers` of kind
 * 'refund' whose `user_unsettled` entries credit the user (sum below zero); on-chain ref
 * `refund:<ipi>` (the refund's Stripe transaction) or `refund:<transfer ref>`, one `chain_refunds` row
 * each, with the same three layers.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import type { Address, Hex, LocalAccount, PublicClient } from 'viem';
import { createLockStatus, runLockedLoop } from '../shared/chain/locked-loop.ts';
import { LOCK_SETTLEMENT_SESSION } from '../shared/db/locks.ts';
import type { Redis } from '../shared/redis/client.ts';
import { createSleeper } from '../shared/sleeper.ts';
import { createClaims } from './claim.ts';
import { createNonces, REFUNDS, SPENDS } from './kinds.ts';
import { assertSettlementLimits, SETTLEMENT_LIMITS } from './limits.ts';
import { createSettlementMetrics, type SettlementMetrics } from './metrics.ts';
import { createBookReceivable } from './receivable.ts';
import { createReconcile } from './reconcile.ts';
import { createSendBatch } from './send-batch.ts';

// The pieces' own modules: kinds.ts (spend/refund, ref hash, nonces), claim.ts (claims), reconcile.ts
// (following sent transactions), receivable.ts (captures without a wallet), send-batch.ts (one batch).
export { refHash } from './kinds.ts';
export { createSettlementMetrics, type SettlementMetrics } from './metrics.ts';

export interface SettlementWorkerOptions {
  sql: postgres.Sql;
  client: PublicClient;
  account: LocalAccount;
  vault: Address;
  chainId: number;
  logger: Logger;
  batchMax?: number;
  resendAfterMs?: number;
  receiptTimeoutMs?: number;
  pollIntervalMs?: number;
  /** The most the program pays per gas (CHAIN_MAX_FEE_PER_GAS_GWEI); above it the worker waits. */
  maxFeePerGasWei: bigint;
  metrics?: SettlementMetrics;
  /** When given, a receivable booking moves the cached unsettled cents too (else a rebuild does). */
  redis?: { client: Redis; prefix: string };
  /** Fault injection for crash tests: runs after the batch is saved as sent, before the broadcast. */
  afterSave?: (hash: Hex) => void | Promise<void>;
  /** Fault injection for crash tests: runs right after the node accepted the transaction. */
  afterBroadcast?: (hash: Hex, kind: 'spend' | 'refund') => void | Promise<void>;
}

export interface SettlementReport {
  claimed: number;
  sent: number;
  batches: number;
  reopened: number;
  failed: number;
  refundsClaimed: number;
  refundsSent: number;
  receivables: number;
  /** True when a send round waited because the base fee was above the cap. */
  feeCapped: boolean;
}

export interface SettlementWorker {
  /** True while run() holds the chain's session lock (asked of Postgres; for /readyz). */
  lockHeld(): Promise<boolean>;
  /** Claims new captures, reconciles sent ones, sends pending ones. */
  runOnce(): Promise<SettlementReport>;
  run(): Promise<void>;
  stop(): Promise<void>;
}

export function createSettlementWorker(options: SettlementWorkerOptions): SettlementWorker {
  assertSettlementLimits();
  const { sql, client, account, logger } = options;
  const vault = options.vault.toLowerCase() as Address;
  const batchMax = Math.min(
    options.batchMax ?? SETTLEMENT_LIMITS.settlementBatchMax,
    SETTLEMENT_LIMITS.settlementBatchMax,
  );
  const resendAfterMs = options.resendAfterMs ?? SETTLEMENT_LIMITS.settlementResendAfterMs;
  const receiptTimeoutMs = options.receiptTimeoutMs ?? SETTLEMENT_LIMITS.settlementReceiptTimeoutMs;
  const pollIntervalMs = options.pollIntervalMs ?? SETTLEMENT_LIMITS.settlementPollIntervalMs;
  const metrics = options.metrics ?? createSettlementMetrics();
  let stopping = false;
  const { sleep, wake } = createSleeper();
  const nonces = createNonces(client, account);
  const { claim, claimRefunds } = createClaims({ sql, logger });
  const reconcile = createReconcile({ sql, client, vault, logger, batchMax, resendAfterMs, nonces });
  const bookReceivable = createBookReceivable({ sql, logger, metrics, redis: options.redis });
  const sendBatch = createSendBatch({
    options,
    sql,
    client,
    account,
    vault,
    logger,
    metrics,
    batchMax,
    receiptTimeoutMs,
    nonces,
    bookReceivable,
  });

  const runOnce = async (): Promise<SettlementReport> => {
    const report: SettlementReport = {
      claimed: 0,
      sent: 0,
      batches: 0,
      reopened: 0,
      failed: 0,
      refundsClaimed: 0,
      refundsSent: 0,
      receivables: 0,
      feeCapped: false,
    };
    report.claimed = await claim();
    report.refundsClaimed = await claimRefunds();
    for (const kind of [SPENDS, REFUNDS]) {
      const reconciled = await reconcile(kind);
      report.reopened += reconciled.reopened;
      report.failed += reconciled.failed;
    }
    // Spends first: a refund sent before its capture settles is held by the vault as refund credit,
    // which the capture then consumes, so either order ends with the same debt.
    for (const kind of [SPENDS, REFUNDS]) {
      for (;;) {
        const sent = await sendBatch(kind, report);
        if (sent === -1) report.feeCapped = true;
        if (sent <= 0) break;
        if (kind.name === 'spend') report.sent += sent;
        else report.refundsSent += sent;
        report.batches++;
      }
      if (report.feeCapped) break;
    }
    return report;
  };

  let running: Promise<void> | null = null;
  const lock = createLockStatus();
  return {
    lockHeld: () => lock.held(),
    runOnce,
    run() {
      if (running !== null) return running;
      running = runLockedLoop({
        sql,
        lock: LOCK_SETTLEMENT_SESSION,
        chainId: options.chainId,
        holder: 'settlement worker',
        round: runOnce,
        stopping: () => stopping,
        sleep,
        pollIntervalMs,
        logger,
        status: lock,
      });
      return running;
    },
    async stop() {
      stopping = true;
      wake();
      if (running !== null) await running.catch(() => {});
    },
  };
}
