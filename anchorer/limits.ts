/**
 * The audit anchorer's own bounds (STYLE.md: one limits.ts per service). What every chain service shares (RPC, block
 * ranges, session-lock checks) is in shared/chain/limits.ts.
 */
export const ANCHORER_LIMITS = {
  /** Audit anchorer: gas of one `anchor` call (about 75k the first time), its receipt wait. */
  anchorGas: 150_000n,
  anchorReceiptTimeoutMs: 30_000,
} as const;
