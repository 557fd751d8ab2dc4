/**
 * The audit anchorer: publishes the audit log's chain head (`audit_log_head`: the newest row's id and
 * hash) to the AuditAnchor contract, so the history the database holds can later be checked against
 * a record its superuser cannot rewrite (verify.ts). One process per chain (an advisory lock, as the
 * settlement worker), its own key (AUDIT_ANCHOR_PRIVATE_KEY; one sender per key keeps nonces simple).
 *
 * It keeps no state of its own: the chain is the record. Each round reads the head, reads the
 * contract's last anchored sequence and the key's nonces, and then does one of:
 * - `empty` / `unchanged`: nothing to anchor (no rows yet, or the head is already anchored);
 * - `pending`: a transaction of this key is still on its way (its pending nonce is above its mined
 *   nonce) — a crash after the broadcast, or a slow block: wait, never send a second anchor beside it;
 * - `fee_capped`: the base fee is above CHAIN_MAX_FEE_PER_GAS_GWEI: wait;
 * - `anchored`: signed with the mined nonce, broadcast, receipt awaited.
 * A crash anywhere leaves one of those states for the next round: before the broadcast nothing is on
 * the wire; after it, the transaction is pending (wait) or mined (unchanged) or dropped (a reorg, a
 * node that forgot it: the nonces agree again and it is sent anew). The contract refuses a sequence
 * not above its last, so a stale duplicate can never add a second anchor.
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
import { auditAnchorAbi } from '../shared/chain/contracts/index.ts';
import { createFeeCap } from '../shared/chain/fees.ts';
import { createLockStatus, runLockedLoop } from '../shared/chain/locked-loop.ts';
import { LOCK_ANCHOR_SESSION, tryExclusive } from '../shared/db/locks.ts';
import { createSleeper } from '../shared/sleeper.ts';
import { ANCHORER_LIMITS } from './limits.ts';
import { type AnchorMetrics, createAnchorMetrics } from './metrics.ts';

export { type AnchorMetrics, createAnchorMetrics } from './metrics.ts';

export interface AnchorerOptions {
  sql: postgres.Sql;
  client: PublicClient;
  /** Signs locally; a custom viem account (an HSM) fits the same type. */
  account: LocalAccount;
  contract: Address;
  chainId: number;
  logger: Logger;
  maxFeePerGasWei: bigint;
  /** Pause between rounds (AUDIT_ANCHOR_INTERVAL_S × 1000). */
  intervalMs: number;
  receiptTimeoutMs?: number;
  metrics?: AnchorMetrics;
  /** Fault injection for crash tests: runs right after the node accepted the transaction. */
  afterBroadcast?: (hash: Hex) => void | Promise<void>;
}

export type AnchorStatus = 'empty' | 'unchanged' | 'pending' | 'fee_capped' | 'anchored';

export interface AnchorReport {
  status: AnchorStatus;
  /** The audit row id the head names (0 when the log is empty). */
  headSequence: bigint;
  /** The last sequence the contract held when the round looked (at the latest block). */
  anchoredSequence: bigint;
  hash: Hex | null;
}

export interface Anchorer {
  /** True while run() holds the chain's anchor lock (asked of Postgres; for /readyz). */
  lockHeld(): Promise<boolean>;
  runOnce(): Promise<AnchorReport>;
  /** Runs rounds every intervalMs under the chain's anchor lock until stop(). */
  run(): Promise<void>;
  stop(): Promise<void>;
}

const HASH = /^[0-9a-f]{64}$/;

/** The audit chain's head as the database records it. */
export async function readAuditHead(sql: postgres.Sql): Promise<{ sequence: bigint; hash: string }> {
  const [row] = await sql<{ last_id: string; last_hash: string }[]>`
    select last_id::text, last_hash from audit_log_head where singleton`;
  if (row === undefined) throw new Error('audit_log_head has no row');
  return { sequence: BigInt(row.last_id), hash: row.last_hash };
}

export function createAnchorer(options: AnchorerOptions): Anchorer {
  const { sql, client, account, logger } = options;
  const contract = options.contract.toLowerCase() as Address;
  const metrics = options.metrics ?? createAnchorMetrics();
  const receiptTimeoutMs = options.receiptTimeoutMs ?? ANCHORER_LIMITS.anchorReceiptTimeoutMs;
  const feeCap = createFeeCap({
    client,
    maxFeePerGasWei: options.maxFeePerGasWei,
    logger,
    aboveCap: metrics.feeAboveCap,
    waits: metrics.feeCapWaits,
    what: 'audit anchoring',
  });
  let stopping = false;
  const { sleep, wake } = createSleeper();

  const runOnce = async (): Promise<AnchorReport> => {
    const head = await readAuditHead(sql);
    const anchored = await client.readContract({
      address: contract,
      abi: auditAnchorAbi,
      functionName: 'lastSequence',
      blockTag: 'latest',
    });
    const report = (status: AnchorStatus, hash: Hex | null = null): AnchorReport => {
      metrics.rounds.inc({ status });
      return { status, headSequence: head.sequence, anchoredSequence: anchored, hash };
    };
    if (head.sequence === 0n) return report('empty');
    if (anchored >= head.sequence) return report('unchanged');
    if (!HASH.test(head.hash)) throw new Error(`audit_log_head.last_hash is not a sha256 hex digest`);
    const [mined, pending] = await Promise.all([
      client.getTransactionCount({ address: account.address, blockTag: 'latest' }),
      client.getTransactionCount({ address: account.address, blockTag: 'pending' }),
    ]);
    if (pending > mined) {
      logger.info({ mined, pending }, 'audit anchor: a transaction of ours is still pending; waiting');
      return report('pending');
    }
    const fees = await feeCap.fees();
    if (fees === null) return report('fee_capped');
    const serialized = await account.signTransaction({
      type: 'eip1559',
      chainId: options.chainId,
      nonce: mined,
      to: contract,
      data: encodeFunctionData({
        abi: auditAnchorAbi,
        functionName: 'anchor',
        args: [head.sequence, `0x${head.hash}`],
      }),
      gas: ANCHORER_LIMITS.anchorGas,
      ...fees,
    });
    const hash = keccak256(serialized);
    await client.sendRawTransaction({ serializedTransaction: serialized });
    await options.afterBroadcast?.(hash);
    logger.info({ hash, sequence: head.sequence.toString() }, 'audit anchor broadcast');
    try {
      const receipt = await client.waitForTransactionReceipt({
        hash,
        timeout: receiptTimeoutMs,
        pollingInterval: 100,
      });
      if (receipt.status !== 'success') {
        logger.error({ hash }, 'audit anchor reverted; the next round looks again');
        return report('pending', hash);
      }
    } catch {
      // Not knowing the receipt now loses nothing: the next round reads the anchor from the chain.
      logger.warn({ hash }, 'audit anchor: no receipt yet; the next round looks again');
      return report('pending', hash);
    }
    metrics.anchoredSequence.set(Number(head.sequence));
    return report('anchored', hash);
  };

  let running: Promise<void> | null = null;
  const lock = createLockStatus();
  return {
    lockHeld: () => lock.held(),
    runOnce,
    run() {
      if (running !== null) return running;
      running = runLockedLoop({
        status: lock,
        sql,
        lock: LOCK_ANCHOR_SESSION,
        chainId: options.chainId,
        holder: 'audit anchorer',
        round: runOnce,
        stopping: () => stopping,
        sleep,
        pollIntervalMs: options.intervalMs,
        logger,
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

/** One round by hand (`npm run anchor`), under the same lock as the loop process. */
export async function anchorOnce(options: AnchorerOptions): Promise<AnchorReport> {
  const release = await tryExclusive(options.sql, LOCK_ANCHOR_SESSION, options.chainId);
  if (release === null) throw new Error(`another audit anchorer holds chain ${options.chainId}`);
  try {
    return await createAnchorer(options).runOnce();
  } finally {
    await release();
  }
}
