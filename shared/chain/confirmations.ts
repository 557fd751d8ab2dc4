/**
 * Confirmation depth, one definition for every chain service: the indexer applies a credit-raising
 * event once its block is this deep, and the liquidator takes a liquidation as done (`confirmed`) once
 * its receipt's block is (liquidator/reconcile.ts). CHAIN_CONFIRMATIONS gives the depth (shared/config.ts).
 */

/**
 * The highest block with `confirmations` confirmations when the head is `head`. The block that
 * includes a transaction counts as its first confirmation, so 0 and 1 both mean "the head".
 */
export function confirmedTipOf(head: bigint, confirmations: number): bigint {
  return head - BigInt(Math.max(confirmations, 1)) + 1n;
}
