/**
 * The withdrawal approver's own bounds (STYLE.md: one limits.ts per service). What every chain service shares (RPC, block
 * ranges, session-lock checks) is in shared/chain/limits.ts.
 */
export const WITHDRAWAL_LIMITS = {
  /** Withdrawal approvals: how long a signed approval stays good (chain time). */
  withdrawalApprovalTtlSMax: 600,
  /** Largest body `POST /withdrawals/approvals` ({userId, assetId}) or `/me/withdrawals/approvals` reads. */
  withdrawalRequestBytesMax: 4_096,
  /**
   * A signed-in user's approval requests (`POST /me/withdrawals/approvals`) per window: each may cost an
   * HSM signature, three RPC reads and a row, and a payout needs one approval (the dashboard asks again
   * only when one expired or was refused as not yet indexed).
   */
  withdrawalUserRequestsMax: 10,
  withdrawalUserWindowS: 60,
} as const;
