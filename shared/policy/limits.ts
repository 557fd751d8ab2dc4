/**
 * Bounds of the decision policy that the hot path's scripts and the lifecycle handlers must agree on
 * (STYLE.md: put a limit on everything that can grow); hot-path/limits.ts includes them.
 */
export const policyLimits = {
  /** Largest amount we accept in a request, in cents ($10M); beyond it the request is malformed. */
  amountCentsMax: 1_000_000_000,
  /** How long a decision's first answer is kept for replays (Stripe retries for days). */
  decisionTtlS: 8 * 86_400,
  /** Per-authorization state (captured, terminal, version). */
  authorizationStateTtlS: 45 * 86_400,
} as const;
