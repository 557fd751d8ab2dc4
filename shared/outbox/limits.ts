/**
 * Bounds of the outbox's transport shared by the hot path (QStash relay) and the ledger writer (QStash
 * receiver, stream writer): dead letters and relayed bodies (STYLE.md: put a limit on everything that can grow).
 */
export const outboxLimits = {
  /** Error text kept in a dead-letter entry. */
  deadLetterErrorCharsMax: 1_000,
  /**
   * Largest body POST /qstash reads (QUEUE_DRIVER=qstash); above it: 413 `body_too_large`, unread and
   * nothing recorded. A relayed entry carries a Stripe event of at most 1 MiB (the outbox record's
   * bound, and WEBHOOK_BODY_LIMIT_BYTES's maximum) escaped twice — as text in the record's JSON, then the
   * record as text in the published JSON — so at most 4 bytes a byte, plus the record's own fields.
   */
  qstashBodyBytesMax: 4_300_000,
  /** Dead letters listed at once (`npm run ops -- dead-letters`). */
  deadLettersListedMax: 200,
} as const;
