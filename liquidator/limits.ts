/**
 * The liquidator's own bounds (STYLE.md: one limits.ts per service). What every chain service shares (RPC, block
 * ranges, session-lock checks) is in shared/chain/limits.ts.
 */
export const LIQUIDATOR_LIMITS = {
  /**
   * Liquidator (Aave v3's rules): the close factor and when it applies. The bonus on seized collateral is
   * the vault's (`LIQUIDATION_BONUS_BPS`, 5 %), read from the chain: `liquidate` enforces it.
   */
  liquidationCloseFactorBps: 5_000,
  /** The close factor applies only to debts at least this large (USDC base units, $2,000)… */
  liquidationCloseFactorDebtMinUsdc: 2_000_000_000n,
  /** …and only while the health factor is at least this (1e18 = 1.0). */
  liquidationCloseFactorHfMinWad: 950_000_000_000_000_000n,
  liquidationUsersPerScanMax: 1_000,
  /** Rows reconcile re-reads per round: in flight, or confirmed within REORG_DEPTH_MAX of the head. */
  liquidationFollowedRowsMax: 1_000,
  liquidationResendAfterMs: 15_000,
  liquidationPollIntervalMs: 2_000,
} as const;
