/**
 * Job `partitions`: creates the `card_events` partitions of the current UTC month and the next
 * `monthsAhead` (shared/db/partitions.ts), then watches: the rows in the default partition and how far
 * ahead every month is covered go to metrics (`credana_card_events_default_rows`,
 * `credana_card_events_partitions_covered_until_seconds`), which ops/prometheus/upkeep-rules.yml alerts
 * on. Runs hourly: idempotent and cheap when everything exists, so a missed hour costs nothing.
 *
 * Findings: `card_events_default_not_empty` (with an alert: the months it blocks cannot be made until
 * the rows are moved, see docs/operations.md) and `card_events_partitions_short` when, after the run,
 * fewer months than asked for are covered.
 */
import {
  addMonths,
  cardEventPartitionStatus,
  DefaultPartitionNotEmptyError,
  type EnsurePartitionsResult,
  ensureCardEventPartitions,
  monthStartUtc,
} from '../../shared/db/partitions.ts';
import type { ReconcileMetrics } from '../metrics.ts';
import type { Finding, JobContext, JobOutcome } from '../types.ts';
import { upkeepLimits } from './limits.ts';

export interface PartitionsJobOptions {
  monthsAhead?: number;
  metrics?: ReconcileMetrics;
}

export function partitionsJob(options: PartitionsJobOptions = {}) {
  const monthsAhead = options.monthsAhead ?? upkeepLimits.partitionMonthsAhead;
  return async (ctx: JobContext): Promise<JobOutcome> => {
    const now = new Date(ctx.now());
    const findings: Finding[] = [];
    let alert: string | undefined;
    let result: EnsurePartitionsResult;
    try {
      result = await ensureCardEventPartitions(ctx.sql, { now, monthsAhead });
    } catch (error) {
      if (!(error instanceof DefaultPartitionNotEmptyError)) throw error;
      result = error.result;
      alert = error.message;
      findings.push({
        kind: 'card_events_default_not_empty',
        rows: String(result.defaultRows),
        blockedMonths: result.blockedMonths,
      });
    }
    const status = await cardEventPartitionStatus(ctx.sql, now);
    options.metrics?.cardEventsDefaultRows.set(Number(status.defaultRows));
    options.metrics?.cardEventsCoveredUntilS.set(Date.parse(`${status.coveredUntil}T00:00:00Z`) / 1000);
    const wanted = addMonths(monthStartUtc(now), monthsAhead + 1);
    if (status.coveredUntil < wanted) {
      findings.push({ kind: 'card_events_partitions_short', coveredUntil: status.coveredUntil, wanted });
    }
    return {
      checked: monthsAhead + 1,
      findings,
      repairs: 0,
      cursor: null,
      ...(alert === undefined ? {} : { alert }),
    };
  };
}
