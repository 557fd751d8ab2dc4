/**
 * Every bound of the Supabase bridge and the projection sync in one place (STYLE.md: put a limit on
 * everything that can grow). `assertSyncLimits` checks a set at boot.
 */
export interface SyncLimits {
  /** Outbox rows the bridge takes per round trip. */
  bridgeBatchMax: number;
  /** The bridge drains the outbox at least this often even with no notification (missed NOTIFY, reconnects). */
  bridgePollIntervalMs: number;
  /** A standby bridge retries the single-instance lock this often. */
  bridgeLockRetryMs: number;
  /** Users recomputed and written per projection batch (one Supabase transaction). */
  projectionBatchMax: number;
  /** Time between projection passes while idle. */
  projectionPollIntervalMs: number;
  /**
   * Each pass re-reads changes this far behind its cursor: a financial transaction that started
   * before the cursor but committed after it (its rows carry its start time) is still seen. Must
   * exceed the financial database's statement timeout and the application clocks' skew.
   */
  projectionOverlapS: number;
  /** A full sweep of every user this often picks up time-driven changes (a price going stale). */
  projectionSweepIntervalS: number;
  /** Recent activity items kept per user. */
  activityPerUserMax: number;
  /** Backoff after a failed round, doubled up to the max. */
  retryDelayMsMin: number;
  retryDelayMsMax: number;
}

export const defaultSyncLimits: SyncLimits = {
  bridgeBatchMax: 100,
  bridgePollIntervalMs: 5_000,
  bridgeLockRetryMs: 2_000,
  projectionBatchMax: 200,
  projectionPollIntervalMs: 1_000,
  projectionOverlapS: 15,
  projectionSweepIntervalS: 300,
  activityPerUserMax: 50,
  retryDelayMsMin: 200,
  retryDelayMsMax: 10_000,
};

export function assertSyncLimits(limits: SyncLimits): void {
  const positive: (keyof SyncLimits)[] = [
    'bridgeBatchMax',
    'bridgePollIntervalMs',
    'bridgeLockRetryMs',
    'projectionBatchMax',
    'projectionPollIntervalMs',
    'projectionOverlapS',
    'projectionSweepIntervalS',
    'activityPerUserMax',
    'retryDelayMsMin',
    'retryDelayMsMax',
  ];
  for (const name of positive) {
    const value = limits[name];
    if (!Number.isInteger(value) || value <= 0)
      throw new Error(`sync limits: ${name} must be a positive integer`);
  }
  if (limits.bridgeBatchMax > 10_000 || limits.projectionBatchMax > 10_000) {
    throw new Error('sync limits: batches above 10,000 rows make one transaction too long');
  }
  if (limits.activityPerUserMax > 500) throw new Error('sync limits: activityPerUserMax above 500');
  if (limits.retryDelayMsMin > limits.retryDelayMsMax) {
    throw new Error('sync limits: retryDelayMsMin must not exceed retryDelayMsMax');
  }
}
