/**
 * Bounds of the lifecycle handlers (STYLE.md: put a limit on everything that can grow), wherever they
 * run (the hot path, the reconciler); hot-path/limits.ts includes them.
 */
export const lifecycleLimits = {
  /** Retries of a lifecycle event when the user's account had to be rebuilt first. */
  applyAttemptsMax: 3,
  /** How long an applied lifecycle event is remembered (Stripe retries async events for 3 days). */
  appliedEventTtlS: 30 * 86_400,
  /** Cards remembered in memory (card → user never changes, so this is a size bound only). */
  cardCacheSizeMax: 1_000_000,
  /**
   * How long a lifecycle event waits for Postgres to say whether its authorization has a fallback grant
   * not yet adopted; past it (or with Postgres away) the event is applied without (ADOPT_FALLBACK's
   * 'settled' then keeps the two in step).
   */
  pendingGrantCheckMs: 500,
  /** After that check failed, how long lifecycle events skip it (so an outage does not slow each one). */
  pendingGrantCheckPauseMs: 1_000,
} as const;
