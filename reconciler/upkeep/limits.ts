/**
 * Every bound of the upkeep jobs in one place (STYLE.md: put a limit on everything that can grow).
 * Checked once when the scheduler starts (`checkUpkeepLimits`).
 */
import { PARTITION_MONTHS_AHEAD_MAX } from '../../shared/db/partitions.ts';

export const upkeepLimits = {
  /** Months of `card_events` partitions kept ready after the current one. */
  partitionMonthsAhead: 3,
  /** Users whose cached holds one sweep batch looks at (one ZCOUNT each, sent together). */
  sweepUsersPerBatch: 500,
  /** Users one sweep run looks at; the rest wait for the next run (cursor). */
  sweepUsersPerRunMax: 200_000,
  /** Holds are swept this long after their expiry (clock skew with Stripe; the `holds` job's grace). */
  sweepGraceS: 300,
  /** Wall-clock budget of one sweep run; past it the run stops at the next batch boundary. */
  sweepRunTimeMaxMs: 5 * 60_000,
} as const;

export type UpkeepLimits = typeof upkeepLimits;

/** Throws on a limit that cannot work; called at boot by the scheduler. */
export function checkUpkeepLimits(l: UpkeepLimits = upkeepLimits): void {
  const problems: string[] = [];
  if (!(l.partitionMonthsAhead >= 1 && l.partitionMonthsAhead <= PARTITION_MONTHS_AHEAD_MAX))
    problems.push(`partitionMonthsAhead must be in 1..${PARTITION_MONTHS_AHEAD_MAX}`);
  if (!(l.sweepUsersPerBatch >= 1 && l.sweepUsersPerBatch <= l.sweepUsersPerRunMax))
    problems.push('sweepUsersPerBatch must be in 1..sweepUsersPerRunMax');
  if (!(l.sweepGraceS >= 0)) problems.push('sweepGraceS must not be negative');
  if (!(l.sweepRunTimeMaxMs > 0)) problems.push('sweepRunTimeMaxMs must be positive');
  if (problems.length > 0) throw new Error(`upkeep limits: ${problems.join('; ')}`);
}
