/**
 * The program's cash withdrawal policy. Cash is credit the program cannot see spent (no merchant, no
 * refund path) and the riskiest draw on collateral, so it is blocked unless the program allows it:
 * `CASH_WITHDRAWAL_POLICY=block` (the default) adds the cash merchant categories to the globally
 * blocked set that every decision (Redis and the Postgres fallback) checks; `allow` leaves the set as
 * `BLOCKED_MCCS` says.
 */
import type { Config } from '../config.ts';

/** Merchant category codes of cash: 6010 manual cash disbursement, 6011 automated cash (ATM). */
export const CASH_WITHDRAWAL_MCCS = ['6010', '6011'] as const;

/**
 * The merchant categories declined `blocked_mcc` for every user, from config.
 * @example globallyBlockedMccs({ BLOCKED_MCCS: ['7995'], CASH_WITHDRAWAL_POLICY: 'block' }) // {7995, 6010, 6011}
 */
export function globallyBlockedMccs(
  settings: Pick<Config, 'BLOCKED_MCCS' | 'CASH_WITHDRAWAL_POLICY'>,
): Set<string> {
  const blocked = new Set(settings.BLOCKED_MCCS);
  if (settings.CASH_WITHDRAWAL_POLICY === 'block') for (const mcc of CASH_WITHDRAWAL_MCCS) blocked.add(mcc);
  return blocked;
}
