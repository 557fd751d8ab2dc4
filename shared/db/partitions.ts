/**
 * Upkeep of the monthly `card_events` partitions (the `npm run db:partitions` job). Rows whose month
 * has no partition fall into `card_events_default`; once that holds rows, creating the partition for
 * their month fails, so the job must run ahead of time and must shout when the default is not empty.
 */
import type { Sql } from './client.ts';

/** The most months one run may create ahead; the SQL function refuses more than 120 in total. */
export const PARTITION_MONTHS_AHEAD_MAX = 119;
export const PARTITION_MONTHS_AHEAD_DEFAULT = 3;

export interface EnsurePartitionsOptions {
  /** The instant whose UTC month is the first one covered. */
  now: Date;
  /** Months after the current one to cover: 3 covers the current month and the next three. */
  monthsAhead: number;
}

export interface EnsurePartitionsResult {
  /** First day of the first month covered, `YYYY-MM-DD` (UTC). */
  fromMonth: string;
  /** Partitions this run created, oldest first; empty when they all existed. */
  created: string[];
  /** Months (`YYYY-MM-01`) whose partition could not be made because the default holds their rows. */
  blockedMonths: string[];
  /** Rows found in `card_events_default` after the run; anything but 0 is an incident. */
  defaultRows: bigint;
}

export class DefaultPartitionNotEmptyError extends Error {
  readonly code = 'card_events_default_not_empty';
  constructor(readonly result: EnsurePartitionsResult) {
    const blocked =
      result.blockedMonths.length > 0
        ? ` (no partition could be made for ${result.blockedMonths.join(', ')})`
        : '';
    super(
      `card_events_default holds ${result.defaultRows} row(s)${blocked}: move them into their month's ` +
        'partition (detach the default, create the partition, re-insert) so upkeep can go on',
    );
  }
}

/** `2026-03-17T…Z` → `2026-03-01`: the first day of the instant's month in UTC. */
export function monthStartUtc(now: Date): string {
  if (Number.isNaN(now.getTime())) throw new RangeError('now is not a valid date');
  return `${now.toISOString().slice(0, 7)}-01`;
}

/** `2026-11-01` plus 3 months → `2027-02-01`. */
export function addMonths(monthStart: string, months: number): string {
  const date = new Date(`${monthStart}T00:00:00Z`);
  date.setUTCMonth(date.getUTCMonth() + months);
  return date.toISOString().slice(0, 10);
}

// The partition bound check that fails when the default partition already holds rows of the new range.
const CHECK_VIOLATION = '23514';

/**
 * Creates the partitions for the current UTC month and `monthsAhead` months after it, then counts the
 * rows in the default partition. Safe to run repeatedly and concurrently (the SQL function takes an
 * advisory lock and skips partitions that exist). Each month is its own statement, so a month blocked
 * by rows in the default partition does not stop the others. Throws `DefaultPartitionNotEmptyError`,
 * carrying what it created, when the default partition holds rows.
 *
 * @example await ensureCardEventPartitions(sql, { now: new Date(), monthsAhead: 3 })
 */
export async function ensureCardEventPartitions(
  sql: Sql,
  options: EnsurePartitionsOptions,
): Promise<EnsurePartitionsResult> {
  const { monthsAhead } = options;
  if (!Number.isInteger(monthsAhead) || monthsAhead < 0 || monthsAhead > PARTITION_MONTHS_AHEAD_MAX) {
    throw new RangeError(`monthsAhead must be an integer in 0..${PARTITION_MONTHS_AHEAD_MAX}`);
  }
  const fromMonth = monthStartUtc(options.now);
  const created: string[] = [];
  const blockedMonths: string[] = [];
  for (let i = 0; i <= monthsAhead; i++) {
    const month = addMonths(fromMonth, i);
    try {
      const rows = await sql<{ name: string }[]>`
        select card_events_ensure_partitions(${month}::date, 1) as name`;
      for (const row of rows) created.push(row.name);
    } catch (error) {
      if ((error as { code?: string }).code !== CHECK_VIOLATION) throw error;
      blockedMonths.push(month);
    }
  }
  // Counting is cheap: the default partition is meant to be empty, and any row in it is the alarm.
  const [count] = await sql<{ rows: string }[]>`select count(*)::text as rows from card_events_default`;
  const result: EnsurePartitionsResult = {
    fromMonth,
    created,
    blockedMonths,
    defaultRows: BigInt(count?.rows ?? '0'),
  };
  if (result.defaultRows > 0n) throw new DefaultPartitionNotEmptyError(result);
  return result;
}

export interface PartitionStatus {
  /** Rows in `card_events_default`. */
  defaultRows: bigint;
  /** First day (`YYYY-MM-01`) of every monthly partition that exists, oldest first. */
  months: string[];
  /**
   * The first instant, from the current UTC month on, that no partition covers (`YYYY-MM-01`): every
   * event created before it has a partition to land in; one created at or after it would fall into
   * the default partition.
   */
  coveredUntil: string;
}

/**
 * What the partition watch reports (metrics and alerts): the default partition's rows and how far
 * ahead the months are covered. Runs as `credana_reconciliation` through a SECURITY DEFINER function.
 *
 * @example (await cardEventPartitionStatus(sql, new Date())).coveredUntil // '2027-04-01'
 */
export async function cardEventPartitionStatus(sql: Sql, now: Date): Promise<PartitionStatus> {
  const [row] = await sql<{ default_rows: string; months: string[] }[]>`
    select default_rows::text, array(select to_char(m, 'YYYY-MM-DD') from unnest(months) m) as months
    from card_events_partition_status()`;
  const months = row?.months ?? [];
  const present = new Set(months);
  let coveredUntil = monthStartUtc(now);
  while (present.has(coveredUntil)) coveredUntil = addMonths(coveredUntil, 1);
  return { defaultRows: BigInt(row?.default_rows ?? '0'), months, coveredUntil };
}
