/**
 * Every bound of the QStash relay in one place (STYLE.md: put a limit on everything that can grow).
 * Batch size and read wait come from its options (LEDGER_BATCH_MAX; the hot path passes 1 s).
 */
export const limits = {
  /**
   * An entry published this long ago whose shard's applied watermark has not passed it is published
   * again (XCLAIM, then a new deduplication id): QStash gave up on it (retries spent, DLQ), or the
   * relay died between reading and publishing it. Long enough that QStash's own retries of an entry
   * that arrived ahead of its predecessor (see retryDelayExpression) are over first.
   */
  republishIdleMs: 30_000,
  /** How often the pending lists are scanned for entries to publish again. */
  republishScanIntervalMs: 5_000,
  /** Pending entries looked at per stream and scan. */
  republishScanMax: 200,
  /** How often applied entries (at or below their shard's watermark) are acknowledged and deleted. */
  ackIntervalMs: 100,
  /** Entries acknowledged and deleted per stream and script call. */
  ackBatchMax: 1_000,
  /** Pause after a failed round (QStash or Redis unreachable). */
  errorBackoffMs: 500,
  /**
   * QStash's delay between retries of one delivery, as its `Upstash-Retry-Delay` expression in ms.
   * An entry that arrives ahead of its predecessor is answered 409 and waits here; short first
   * retries keep that wait near the predecessor's own delivery time.
   */
  retryDelayExpression: 'min(8000, 500 * pow(2, retried))',
} as const;
