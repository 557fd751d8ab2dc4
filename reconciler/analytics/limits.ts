/** Bounds of the analytics store (STYLE.md: a limit on everything that can grow). */
export const limits = {
  /** Rows copied from the financial database per statement during ingestion. */
  ingestRowsPerBatch: 5_000,
  /** Rows copied per source in one ingestion run; the watermark resumes the rest. */
  ingestRowsPerRunMax: 1_000_000,
  /** Users whose risk is computed per batch for a snapshot. */
  riskUsersPerBatch: 500,
  /** Monthly partitions created ahead of the newest row (native backend). */
  partitionMonthsAhead: 2,
  /** Rows a report prints (the CSV gets them all up to this bound too). */
  reportRowsMax: 10_000,
  /** Statement timeout of analytics queries (the replica is there to take slow ones). */
  statementTimeoutMs: 60_000,
} as const;
