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
  /**
   * A shard's lease (LEDGER_SHARD_LEASE_MS's default; shards.ts): renewed every quarter of it, so a
   * killed writer's shards are taken over within 1.25 × this. Also how long Postgres lets a writer's
   * transaction sit idle (a paused writer's open transaction cannot hold a takeover up for longer).
   */
  shardLeaseMsDefault: 10_000,
  shardLeaseMsMin: 1_000,
  shardLeaseMsMax: 600_000,
  /** Shards tried at once when taking free ones (each a SET NX, and for a new one a Postgres upsert). */
  shardAcquireConcurrency: 32,
  /**
   * A shard that had nothing is polled again after a wait doubling from LEDGER_BATCH_WAIT_MS up to this:
   * the cost of an idle shard is 1000 / this polls a second, and this is the most a quiet shard's first
   * entry waits before it is read (docs/redis-layout.md has the figures).
   */
  idlePollMsMax: 200,
  /**
   * Entries a poll asks of each due shard at least (its share of LEDGER_BATCH_MAX if larger): with 256
   * busy shards a read is one command per 16 entries, not per 2, and holds at most 256 × 16 = 4,096
   * entries (~5 MB with full Stripe events); acks go out once per read and stream.
   */
  shardReadCountMin: 16,
  /** Shard counts `npm run bench:ledger` may compare (the writer's `shardCount` option). */
  benchShardCountMax: 4_096,
  /** Backoff while Postgres (or Redis) is unreachable: doubles from min to max, forever. */
  retryBackoffMsMin: 50,
  retryBackoffMsMax: 5_000,
  /** Tries of one isolated entry that keeps failing with a data error before it is dead-lettered. */
  poisonAttemptsMax: 3,
  /** Pause between those tries (an entry may only be waiting for an earlier one held by another writer). */
  poisonRetryDelayMs: 200,
  /** Lag is measured at most this often (an XRANGE and an XLEN per owned shard, sent together). */
  lagSampleIntervalMs: 1_000,
  /**
   * Failed applies of one entry at the head of its shard (a data error, not an outage) before the
   * receiver dead-letters it and moves the shard on; counted in Redis, forgotten after the TTL.
   */
  qstashPoisonAttemptsTtlS: 86_400,
  /** Queued merchant names sealed per statement (seal-queue.ts). */
  sealQueueRowsMax: 500,
  /** How often the writer looks for merchant names waiting to be sealed (seal-queue.ts). */
  sealQueueIntervalMs: 5_000,
} as const;

export function assertLimits(batchMax: number, batchWaitMs: number, leaseMs: number): void {
  if (!Number.isInteger(batchMax) || batchMax < 1 || batchMax > 10_000) {
    throw new Error(`LEDGER_BATCH_MAX must be an integer in 1..10000, got ${batchMax}`);
  }
  if (!Number.isInteger(leaseMs) || leaseMs < limits.shardLeaseMsMin || leaseMs > limits.shardLeaseMsMax) {
    throw new Error(
      `LEDGER_SHARD_LEASE_MS must be an integer in ${limits.shardLeaseMsMin}..${limits.shardLeaseMsMax}, got ${leaseMs}`,
    );
  }
  // A batch's wait must fit well inside a lease renewal period, or the writer would lose its shards
  // while merely waiting for a batch to fill.
  const waitMax = Math.floor(leaseMs / 4) - 1;
  if (!Number.isInteger(batchWaitMs) || batchWaitMs < 1 || batchWaitMs > waitMax) {
    throw new Error(
      `LEDGER_BATCH_WAIT_MS must be an integer in 1..${waitMax} (a quarter of LEDGER_SHARD_LEASE_MS), got ${batchWaitMs}`,
    );
  }
}
