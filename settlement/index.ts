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
import {
  type Address,
  encodeFunctionData,
  type Hex,
  keccak256,
  type LocalAccount,
  type PublicClient,
  toBytes,
} from 'viem';
import { credanaVaultAbi } from '../shared/chain/contracts/index.ts';
import { createFeeCap } from '../shared/chain/fees.ts';
import { LIMITS } from '../shared/chain/limits.ts';
import { createLockStatus, runLockedLoop } from '../shared/chain/locked-loop.ts';
import { classifyRpcError } from '../shared/chain/rpc/index.ts';
import { LOCK_SETTLEMENT_SESSION } from '../shared/db/locks.ts';
import { chainStateOfUsers, vaultAccountsOf } from '../shared/db/queries/chain.ts';
import { addToCreditAccounts } from '../shared/db/queries/credit-accounts.ts';
import { insertTransfers } from '../shared/db/queries/ledger.ts';
import { USDC_PER_CENT } from '../shared/money.ts';
import { writeChainState } from '../shared/redis/account.ts';
import type { Redis } from '../shared/redis/client.ts';
import { createSleeper } from '../shared/sleeper.ts';
import { createSettlementMetrics, type SettlementMetrics } from './metrics.ts';

export { createSettlementMetrics, type SettlementMetrics } from './metrics.ts';

/** What is sent on-chain: captured spend or credited refunds. */
interface Kind {
  name: 'spend' | 'refund';
  table: 'settlements' | 'chain_refunds';
  functionName: 'recordSpends' | 'recordRefunds';
  recordedMap: 'spendRecorded' | 'refundRecorded';
}
const SPENDS: Kind = {
  name: 'spend',
  table: 'settlements',
  functionName: 'recordSpends',
  recordedMap: 'spendRecorded',
};
const REFUNDS: Kind = {
  name: 'refund',
  table: 'chain_refunds',
  functionName: 'recordRefunds',
  recordedMap: 'refundRecorded',
};

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

interface PendingRow {
  ref: string;
  user_id: string;
  amount_usdc: string;
  attempts: number;
}

export function refHash(ref: string): Hex {
  return keccak256(toBytes(ref));
}

export function createSettlementWorker(options: SettlementWorkerOptions): SettlementWorker {
  const { sql, client, account, logger } = options;
  const vault = options.vault.toLowerCase() as Address;
  const batchMax = Math.min(options.batchMax ?? LIMITS.settlementBatchMax, LIMITS.settlementBatchMax);
  const resendAfterMs = options.resendAfterMs ?? LIMITS.settlementResendAfterMs;
  const receiptTimeoutMs = options.receiptTimeoutMs ?? LIMITS.settlementReceiptTimeoutMs;
  const pollIntervalMs = options.pollIntervalMs ?? LIMITS.settlementPollIntervalMs;
  const metrics = options.metrics ?? createSettlementMetrics();
  let lastTransferId = 0n;
  let lastRefundTransferId = 0n;
  let nextNonce: number | null = null;
  let stopping = false;
  const { sleep, wake } = createSleeper();

  const takeNonce = async (): Promise<number> => {
    // The node's pending count is the truth after a restart or a rejected send; between those, our
    // own counter (one worker per key, enforced by an advisory lock) avoids a round trip per batch.
    if (nextNonce === null)
      nextNonce = await client.getTransactionCount({ address: account.address, blockTag: 'pending' });
    return nextNonce++;
  };

  /**
   * Creates a `pending` settlement for every capture that has none. The scan starts after the last
   * transfer id known to be settled-or-claimed and older than a minute: ids are drawn at insert but
   * become visible at commit, so a younger, smaller id may still appear and is always re-scanned.
   */
  const claim = async (): Promise<number> => {
    const captures = await sql<
      { id: string; settled_ok: boolean; user_id: string; cents: string; capture_id: string | null }[]
    >`
      select c.id::text, c.created_at < now() - interval '60 seconds' as settled_ok, c.user_id::text,
        c.cents::text,
        case
          when c.ref like 'capture:%' then substr(c.ref, 9)
          when c.ref like 'lifecycle:%' then
            (select ce.object_id from card_events ce
             where ce.id = substr(c.ref, 11) and ce.object_id like 'ipi\_%' limit 1)
          else c.ref
        end as capture_id
      from (
        select t.id, t.ref, t.user_id, t.created_at, sum(e.amount_cents) as cents
        from ledger_transfers t
        join ledger_entries e on e.transfer_id = t.id and e.account = 'user_unsettled' and e.user_id = t.user_id
        where t.kind = 'capture' and t.user_id is not null and t.id > ${lastTransferId.toString()}::bigint
        group by t.id
        order by t.id
        limit ${LIMITS.settlementCapturesPerScanMax}
      ) c`;
    // A capture booked from a Stripe event is named by its transaction id (`ipi_…`), read from the raw
    // event the ledger writer archives in a transaction of its own, after the money. Until that row is
    // there the capture is not claimed (claimed under another name, it would be recorded twice).
    const fresh = captures.filter(
      (c): c is typeof c & { capture_id: string } => c.capture_id !== null && BigInt(c.cents) > 0n,
    );
    let claimed = 0;
    if (fresh.length > 0) {
      const inserted = await sql`
        insert into settlements (ref, user_id, amount_cents, amount_usdc, status)
        select r, u, c, c * ${USDC_PER_CENT.toString()}::bigint, 'pending'
        from unnest(${fresh.map((c) => c.capture_id)}::text[], ${fresh.map((c) => c.user_id)}::uuid[],
          ${fresh.map((c) => c.cents)}::bigint[]) as x(r, u, c)
        on conflict (ref) do nothing`;
      claimed = inserted.count;
    }
    for (const c of captures) {
      if (!c.settled_ok) break;
      if (c.capture_id === null) {
        // Its event is still not archived after a minute (dead-lettered as `archive`): the scan stays
        // here, so it is claimed once the dead letter is replayed.
        logger.warn({ transferId: c.id }, 'settlement: a capture waits for its archived event');
        break;
      }
      lastTransferId = BigInt(c.id);
    }
    return claimed;
  };

  /** Creates a `pending` chain refund for every credited refund transfer that has none (as `claim`). */
  const claimRefunds = async (): Promise<number> => {
    const refunds = await sql<
      {
        id: string;
        settled_ok: boolean;
        user_id: string;
        cents: string;
        transfer_ref: string;
        chain_ref: string;
      }[]
    >`
      select r.id::text, r.created_at < now() - interval '60 seconds' as settled_ok, r.user_id::text,
        (-r.cents)::text as cents, r.ref as transfer_ref,
        'refund:' || case
          when r.ref like 'lifecycle:%' then coalesce(
            (select ce.object_id from card_events ce
             where ce.id = substr(r.ref, 11) and ce.object_id like 'ipi\_%' limit 1),
            r.ref)
          else r.ref
        end as chain_ref
      from (
        select t.id, t.ref, t.user_id, t.created_at, sum(e.amount_cents) as cents
        from ledger_transfers t
        join ledger_entries e on e.transfer_id = t.id and e.account = 'user_unsettled' and e.user_id = t.user_id
        where t.kind = 'refund' and t.user_id is not null and t.id > ${lastRefundTransferId.toString()}::bigint
        group by t.id
        order by t.id
        limit ${LIMITS.settlementCapturesPerScanMax}
      ) r`;
    const fresh = refunds.filter((r) => BigInt(r.cents) > 0n);
    let claimed = 0;
    if (fresh.length > 0) {
      const inserted = await sql`
        insert into chain_refunds (ref, transfer_ref, user_id, amount_cents, amount_usdc, status)
        select r, t, u, c, c * ${USDC_PER_CENT.toString()}::bigint, 'pending'
        from unnest(${fresh.map((r) => r.chain_ref)}::text[], ${fresh.map((r) => r.transfer_ref)}::text[],
          ${fresh.map((r) => r.user_id)}::uuid[], ${fresh.map((r) => r.cents)}::bigint[]) as x(r, t, u, c)
        on conflict do nothing`;
      claimed = inserted.count;
    }
    for (const r of refunds) {
      if (!r.settled_ok) break;
      lastRefundTransferId = BigInt(r.id);
    }
    return claimed;
  };

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
        const give = row.attempts >= LIMITS.settlementAttemptsMax;
        await sql`update ${sql(kind.table)} set status = ${give ? 'failed' : 'pending'}, last_error = ${reason},
          updated_at = now() where ref = ${row.ref} and status = 'sent'`;
        if (give) failed++;
        else reopened++;
      }
      nextNonce = null; // a lost or reverted transaction may have left a gap: ask the node again
      logger.warn(
        { hash, kind: kind.name, refs: rows.map((r) => r.ref), reason },
        'settlement transaction not recorded; re-sending',
      );
    }
    return { reopened, failed };
  };

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
    const nonce = await takeNonce();
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
      nextNonce = null;
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
      nextNonce = null;
      const problem = classifyRpcError(error);
      await sql`update ${sql(kind.table)} set status = 'pending', last_error = ${problem.code}, updated_at = now()
        where ref = any(${refs}::text[]) and status = 'sent' and transaction_hash = ${hash}`;
      throw error;
    }
    metrics.batchesSent.inc({ kind: kind.name });
    await options.afterBroadcast?.(hash, kind.name);
    logger.info({ hash, nonce, kind: kind.name, refs: refs.length }, 'settlement batch broadcast');
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
    return batch.length;
  };

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
