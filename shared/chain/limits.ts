/**
 * Every bound of the indexer and the settlement worker, named in one place (TigerBeetle style: a limit
 * on everything that can grow). `assertLimits()` runs at boot; tests may pass smaller values through
 * the factories' options, never larger ones than these maxima.
 */
import assert from 'node:assert/strict';

export const LIMITS = {
  /** getLogs block range: where the adaptive range starts, its floor and its ceiling. */
  blockRangeInitial: 2_000,
  blockRangeMin: 1,
  blockRangeMax: 10_000,
  /** Above this many logs in one response the next range is halved (memory and transaction size). */
  logsPerRangeMax: 10_000,
  /** Near the head every block header is fetched (for reorg detection); at most this many per step. */
  tailBlocksPerStepMax: 256,
  /** Header requests in flight at once when walking the tail. */
  headerFetchConcurrency: 16,

  /** One RPC call: timeout, retries (bounded), backoff. */
  rpcTimeoutMs: 10_000,
  rpcRetriesMax: 5,
  rpcRetryDelayMsBase: 100,
  rpcRetryDelayMsMax: 5_000,
  /** Token bucket in front of the node: sustained rate and burst. */
  rpcRequestsPerSMax: 500,
  rpcBurstMax: 100,

  /**
   * Head following. A quarter second: a price drop (applied at first sight) must take credit away on
   * every hot-path process within 1 s of its block (issue 14; measured ~0.3 s in
   * test/chain-liquidator-credit.test.ts at 200 ms), and 1 s polling alone could use all of it.
   */
  pollIntervalMs: 250,
  /** Consecutive failed steps before the indexer gives up (each waits pollInterval × attempt). */
  stepFailuresMax: 20,
  /** Ranges fetched ahead of the one being written during backfill. */
  prefetchRangesMax: 2,

  /** Confirmations and reorgs (config gives the values; these are the hard ceilings). */
  confirmationsMax: 1_000,
  reorgDepthMax: 10_000,

  /** Postgres: rows per multi-row statement, statement timeout for range commits. */
  rowsPerStatementMax: 20_000,
  rangeCommitTimeoutMs: 60_000,

  /** Redis write-through: users per pipeline; users kept for retry when Redis is down. */
  redisUsersPerBatchMax: 500,
  redisDirtyUsersMax: 100_000,

  /** Anchors read per `anchorsBetween` call by the verification. */
  anchorsPerReadMax: 1_000,
  /** Anchors the verification reads in all (about 19 years of 10-minute anchors). */
  anchorsReadMax: 1_000_000,
  /**
   * The settlement worker and the liquidator ask Postgres before each round whether they still hold
   * their chain's session lock (locked-loop.ts); an answer slower than this counts as "lost".
   */
  sessionLockCheckTimeoutMs: 5_000,

  /** Wallet linking (EIP-4361 messages). */
  siweNonceTtlS: 600,
  siweMessageAgeMaxS: 600,
  siweMessageBytesMax: 2_048,
} as const;

export type Limits = typeof LIMITS;

/** Checks the limits' own consistency at boot. A failure is a programmer error: crash loudly. */
export function assertLimits(limits: Limits = LIMITS): void {
  assert.ok(limits.blockRangeMin >= 1, 'blockRangeMin must be at least 1');
  assert.ok(
    limits.blockRangeMin <= limits.blockRangeInitial,
    'blockRangeMin must not exceed blockRangeInitial',
  );
  assert.ok(
    limits.blockRangeInitial <= limits.blockRangeMax,
    'blockRangeInitial must not exceed blockRangeMax',
  );
  assert.ok(limits.rpcRetriesMax >= 0 && limits.rpcRetriesMax <= 20, 'rpcRetriesMax out of range');
  assert.ok(limits.rpcRetryDelayMsBase <= limits.rpcRetryDelayMsMax, 'retry delays inverted');
  assert.ok(limits.rpcRequestsPerSMax > 0 && limits.rpcBurstMax > 0, 'rate limit must be positive');
  assert.ok(limits.tailBlocksPerStepMax >= 1, 'tailBlocksPerStepMax must be at least 1');
  assert.ok(limits.rowsPerStatementMax >= limits.logsPerRangeMax, 'a full range must fit one statement');
  assert.ok(
    limits.sessionLockCheckTimeoutMs >= 100 && limits.sessionLockCheckTimeoutMs <= 60_000,
    'sessionLockCheckTimeoutMs out of range',
  );
}

/** Checks the configured confirmations and reorg depth against the ceilings and each other. */
export function assertChainSettings(settings: { confirmations: number; reorgDepthMax: number }): void {
  assert.ok(
    Number.isInteger(settings.confirmations) &&
      settings.confirmations >= 0 &&
      settings.confirmations <= LIMITS.confirmationsMax,
    `confirmations must be an integer in [0, ${LIMITS.confirmationsMax}]`,
  );
  assert.ok(
    Number.isInteger(settings.reorgDepthMax) &&
      settings.reorgDepthMax >= 1 &&
      settings.reorgDepthMax <= LIMITS.reorgDepthMax,
    `reorgDepthMax must be an integer in [1, ${LIMITS.reorgDepthMax}]`,
  );
  // An event waits for confirmations inside the window where reorgs are tracked; a deeper
  // confirmation requirement would keep unapplied events below the window the indexer scans.
  assert.ok(settings.confirmations <= settings.reorgDepthMax, 'confirmations must not exceed reorgDepthMax');
}
