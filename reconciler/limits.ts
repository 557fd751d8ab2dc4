/**
 * Every bound of the reconciliation jobs in one place (STYLE.md: put a limit on everything that can
 * grow). A run stops at the first bound it reaches and records a cursor; the next run resumes there.
 */
export const limits = {
  /** Users read from Postgres per batch (cache and chain jobs). */
  usersPerBatch: 200,
  /** Users checked by one run; the rest wait for the next run (cursor). */
  usersPerRunMax: 50_000,
  /** Wall-clock budget of one run; past it the job stops at the next batch boundary. */
  runTimeMaxMs: 10 * 60_000,
  /** Findings kept in the run row; more are counted in a final `truncated` item. */
  findingsStoredMax: 500,
  /** Outbox entries of one shard inspected to decide whether a user's entries are drained. */
  outboxScanMax: 2_000,
  /** Users with cache drift in one run above which the job raises an alert. */
  driftAlertUsersMax: 5,
  /** Open holds read from Postgres per batch (holds job). */
  holdsPerBatch: 500,
  /** Open holds examined by one run. */
  holdsPerRunMax: 100_000,
  /** A hold is released only this long after its expiry (clock skew between us and Stripe). */
  holdExpiryGraceS: 300,
  /** Ledger transfer ids per range scanned by the books job. */
  transfersPerBatch: 10_000,
  /** Audit rows re-hashed per statement. */
  auditRowsPerBatch: 5_000,
  /** Rows (transfers + users + audit rows) the books job reads in one run. */
  booksRowsPerRunMax: 2_000_000,
  /** Audit rows may wait this many anchor intervals (AUDIT_ANCHOR_INTERVAL_S) for an anchor… */
  anchorStaleIntervals: 3,
  /** …plus this long (confirmations, a slow block) before the anchors job reports them. */
  anchorStaleSlackS: 1_800,
  /** Contract calls per multicall (viem splits a larger set into several eth_calls). */
  chainCallsPerMulticall: 300,
  /** Size of a Stripe export file we agree to read. */
  stripeExportBytesMax: 64 * 1024 * 1024,
  /** Rows of a Stripe export (transactions or authorizations). */
  stripeExportRowsMax: 500_000,
  /** Card events are fetched this far around the period, then filtered on the object's own `created`. */
  stripeEventSlackS: 86_400,
  /** Items per page asked of Stripe's list endpoints (Stripe's own maximum is 100). */
  stripeApiPageSize: 100,
  /** Pages of one list (transactions or authorizations) for one day; more is an error, not a silent cut. */
  stripeApiPagesMax: 500,
  /** Items of one list for one day (pages × page size bounds it too; this names the intent). */
  stripeApiItemsMax: 50_000,
  /** One Stripe API request, and the retries the stripe library makes on network errors and 5xx/429. */
  stripeApiTimeoutMs: 30_000,
  stripeApiRetries: 2,
  /** Days the scheduled `stripe` run reconciles at most; a backlog (missed nights) is caught up over runs. */
  stripeDaysPerRunMax: 7,
  /** Body of a scheduled POST /reconcile/:job (`{ "job": "<name>" }`); larger: 413, refused unread. */
  httpBodyBytesMax: 4_096,
} as const;

export type ReconcileLimits = typeof limits;
