import assert from 'node:assert/strict';

/**
 * The settlement worker's own bounds (STYLE.md: one limits.ts per service). What every chain service shares (RPC, block
 * ranges, session-lock checks) is in shared/chain/limits.ts.
 */
export const SETTLEMENT_LIMITS = {
  /** Settlement worker. */
  settlementBatchMax: 100,
  settlementReceiptTimeoutMs: 30_000,
  /** A sent transaction neither mined nor known to the node after this long is re-sent. */
  settlementResendAfterMs: 15_000,
  settlementAttemptsMax: 10,
  settlementPollIntervalMs: 1_000,
  settlementCapturesPerScanMax: 5_000,
} as const;

/** Checks the settlement worker's limits at boot. A failure is a programmer error: crash loudly. */
export function assertSettlementLimits(limits: typeof SETTLEMENT_LIMITS = SETTLEMENT_LIMITS): void {
  assert.ok(
    limits.settlementBatchMax >= 1 && limits.settlementBatchMax <= 500,
    'settlementBatchMax out of range',
  );
}
