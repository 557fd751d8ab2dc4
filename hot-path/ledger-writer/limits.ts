/**
 * Every bound of the ledger writer in one place (STYLE.md: put a limit on everything that can grow).
 * Batch size and wait come from config (LEDGER_BATCH_MAX, LEDGER_BATCH_WAIT_MS); these are the rest.
 */
export const limits = {
  /** Rows per multi-row INSERT, so no statement nears Postgres's 65,535 bind parameters (≤ 13 columns). */
  rowsPerStatementMax: 4_000,
  /** Transfers per insertTransfers call (≤ 4 entries × 4 columns each). */
  transfersPerStatementMax: 2_000,
  /**
   * Batches written at once, on separate connections, split by user (writer.ts applyPrepared). Two use
   * both cores of a small machine; beyond that the audit chain head, taken by every transaction at its
   * end, serialises them. The database pool needs one connection more than this.
   */
  applyLanes: 2,
  applyLanesMax: 8,
  /** Reads smaller than this are written in one transaction, not split into lanes. */
  laneSplitEntriesMin: 100,
  /** A pending entry idle this long belongs to a dead consumer: another writer claims it. */
  claimIdleMs: 10_000,
  /** How often to look for a dead consumer's entries. */
  claimIntervalMs: 2_000,
  /** Backoff while Postgres (or Redis) is unreachable: doubles from min to max, forever. */
  retryBackoffMsMin: 50,
  retryBackoffMsMax: 5_000,
  /** Tries of one isolated entry that keeps failing with a data error before it is dead-lettered. */
  poisonAttemptsMax: 3,
  /** Pause between those tries (an entry may only be waiting for an earlier one held by another writer). */
  poisonRetryDelayMs: 200,
  /** Lag is measured at most this often (16 XRANGE calls, pipelined). */
  lagSampleIntervalMs: 500,
  /** Error text kept in a dead-letter entry. */
  deadLetterErrorCharsMax: 1_000,
  /**
   * Largest body POST /qstash reads (QUEUE_DRIVER=qstash); above it: 413 `body_too_large`, unread and
   * nothing recorded. A relayed entry carries a Stripe event of at most 1 MiB (the outbox record's
   * bound, and WEBHOOK_BODY_LIMIT_BYTES's maximum) escaped twice — as text in the record's JSON, then the
   * record as text in the published JSON — so at most 4 bytes a byte, plus the record's own fields.
   */
  qstashBodyBytesMax: 4_300_000,
  /**
   * Failed applies of one entry at the head of its shard (a data error, not an outage) before the
   * receiver dead-letters it and moves the shard on; counted in Redis, forgotten after the TTL.
   */
  qstashPoisonAttemptsTtlS: 86_400,
  /** Dead letters listed at once (`npm run ops -- dead-letters`). */
  deadLettersListedMax: 200,
  /** Queued merchant names sealed per statement (seal-queue.ts). */
  sealQueueRowsMax: 500,
  /** How often the writer looks for merchant names waiting to be sealed (seal-queue.ts). */
  sealQueueIntervalMs: 5_000,
} as const;

export function assertLimits(batchMax: number, batchWaitMs: number): void {
  if (!Number.isInteger(batchMax) || batchMax < 1 || batchMax > 10_000) {
    throw new Error(`LEDGER_BATCH_MAX must be an integer in 1..10000, got ${batchMax}`);
  }
  if (!Number.isInteger(batchWaitMs) || batchWaitMs < 1 || batchWaitMs >= limits.claimIdleMs) {
    throw new Error(
      `LEDGER_BATCH_WAIT_MS must be an integer in 1..${limits.claimIdleMs - 1}, got ${batchWaitMs}`,
    );
  }
}
