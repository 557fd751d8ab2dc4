/**
 * The captured total Stripe lists on an authorization (`transactions`): read by the lifecycle handler
 * from an event (shared/lifecycle/handler.ts) and by the account rebuild from the stored `closed` event
 * (shared/redis/account.ts), so both read one list the same way.
 */
import { policyLimits } from './limits.ts';

/**
 * Cents captured per Stripe's list (captures are negative, a positive capture is a reversal), or -1
 * when it lists none or the list cannot be read.
 */
export function capturedCentsListed(listed: readonly unknown[] | null | undefined): number {
  if (listed === undefined || listed === null || listed.length === 0) return -1;
  let captured = 0;
  for (const item of listed) {
    if (typeof item !== 'object' || item === null) return -1;
    const { amount, type } = item as { amount?: unknown; type?: unknown };
    if (typeof amount !== 'number' || !Number.isSafeInteger(amount)) return -1;
    if (Math.abs(amount) > policyLimits.amountCentsMax) return -1;
    if (type === 'capture') captured -= amount;
    else if (type !== 'refund') return -1;
  }
  return captured > 0 ? captured : 0;
}
