/**
 * The risk team's questions, one function each, over the analytics store only (never the financial
 * database). The same SQL runs on both backends: it reads the aggregate views and the snapshot tables
 * by name. Every result is rows of strings and numbers-as-strings (bigint-safe), ready for a table or CSV.
 */
import type { Sql } from '../../shared/db/client.ts';
import { limits } from './limits.ts';

export type ReportRow = Record<string, string | null>;

export interface Period {
  from: Date;
  to: Date;
}

/** Spend (captures minus refunds) by UTC day and merchant category. */
export async function spendByDayAndCategory(sql: Sql, period: Period): Promise<ReportRow[]> {
  return sql<ReportRow[]>`
    select to_char(day at time zone 'UTC', 'YYYY-MM-DD') as day, mcc, spend_cents::text, captures::text, refunds::text
    from analytics.spend_daily where day >= ${period.from} and day < ${period.to}
    order by spend_daily.day, spend_daily.spend_cents desc, spend_daily.mcc limit ${limits.reportRowsMax}`;
}

/** Decisions, approvals and the approval rate (4 decimals) by UTC hour. */
export async function approvalRateByHour(sql: Sql, period: Period): Promise<ReportRow[]> {
  return sql<ReportRow[]>`
    select to_char(hour at time zone 'UTC', 'YYYY-MM-DD"T"HH24:00"Z"') as hour, sum(decisions)::text as decisions,
      coalesce(sum(decisions) filter (where approved), 0)::text as approved,
      round(coalesce(sum(decisions) filter (where approved), 0)::numeric / sum(decisions), 4)::text as approval_rate
    from analytics.decisions_hourly where hour >= ${period.from} and hour < ${period.to}
    group by decisions_hourly.hour order by decisions_hourly.hour limit ${limits.reportRowsMax}`;
}

/** Declines by reason and UTC hour. */
export async function declineReasonsByHour(sql: Sql, period: Period): Promise<ReportRow[]> {
  return sql<ReportRow[]>`
    select to_char(hour at time zone 'UTC', 'YYYY-MM-DD"T"HH24:00"Z"') as hour, reason, decisions::text as declines
    from analytics.decisions_hourly where not approved and hour >= ${period.from} and hour < ${period.to}
    order by decisions_hourly.hour, decisions_hourly.decisions desc, decisions_hourly.reason limit ${limits.reportRowsMax}`;
}

/** The latest complete risk snapshot's time, or null when none was taken. */
async function latestSnapshot(sql: Sql): Promise<Date | null> {
  const [row] = await sql<{ at: Date | null }[]>`select max(taken_at) as at from analytics.snapshots`;
  return row?.at ?? null;
}

/** Boundaries of the health-factor buckets, in WAD (10^18 = 1.0). */
const HF_BUCKETS = ['1.0', '1.1', '1.25', '1.5', '2.0', '3.0'] as const;

/** How many users sit in each health-factor band in the latest snapshot (`no debt`: nothing owed). */
export async function healthFactorDistribution(sql: Sql): Promise<ReportRow[]> {
  const at = await latestSnapshot(sql);
  if (at === null) return [];
  const edges = HF_BUCKETS.map((b) => (BigInt(Math.round(Number(b) * 100)) * 10n ** 16n).toString());
  return sql<ReportRow[]>`
    with b as (
      select case
        when health_factor_wad is null then 99
        else width_bucket(health_factor_wad, ${sql.unsafe(`array[${edges.join(', ')}]::numeric[]`)})
      end as bucket, debt_cents
      from analytics.risk_snapshots where taken_at = ${at}
    )
    select case bucket
        when 99 then 'no debt'
        when 0 then '< 1.0'
        ${sql.unsafe(
          HF_BUCKETS.map((edge, i) => `when ${i + 1} then '${edge} – ${HF_BUCKETS[i + 1] ?? '∞'}'`).join(' '),
        )}
      end as health_factor, count(*)::text as users, sum(debt_cents)::text as debt_cents
    from b group by bucket order by bucket`;
}

/** The users with the lowest health factor in the latest snapshot (those closest to liquidation). */
export async function closestToLiquidation(sql: Sql, limit = 20): Promise<ReportRow[]> {
  const at = await latestSnapshot(sql);
  if (at === null) return [];
  return sql<ReportRow[]>`
    select user_id::text, trunc(health_factor_wad / 1e18, 4)::text as health_factor,
      collateral_value_cents::text, debt_cents::text, available_cents::text
    from analytics.risk_snapshots
    where taken_at = ${at} and health_factor_wad is not null
    order by health_factor_wad, user_id limit ${Math.min(limit, limits.reportRowsMax)}`;
}

const AGE_BANDS: [string, string][] = [
  ['< 1 day', '1 day'],
  ['1–3 days', '3 days'],
  ['3–7 days', '7 days'],
  ['7–31 days', '31 days'],
];

/** Open holds in the latest snapshot, by age (snapshot time − authorization time). */
export async function holdsByAge(sql: Sql): Promise<ReportRow[]> {
  const at = await latestSnapshot(sql);
  if (at === null) return [];
  const cases = AGE_BANDS.map(([, upTo], i) => `when age < interval '${upTo}' then ${i}`).join(' ');
  const labels = AGE_BANDS.map(([label], i) => `when ${i} then '${label}'`).join(' ');
  return sql<ReportRow[]>`
    with h as (
      select case ${sql.unsafe(cases)} else ${AGE_BANDS.length} end as band, held_cents
      from (select taken_at - authorized_at as age, held_cents from analytics.hold_snapshots where taken_at = ${at}) x
    )
    select case band ${sql.unsafe(labels)} else '≥ 31 days' end as age, count(*)::text as holds,
      sum(held_cents)::text as held_cents
    from h group by band order by band`;
}

export const REPORTS = {
  'spend-by-day': { needsPeriod: true, run: spendByDayAndCategory },
  'approval-rate': { needsPeriod: true, run: approvalRateByHour },
  'decline-reasons': { needsPeriod: true, run: declineReasonsByHour },
  'health-factors': { needsPeriod: false, run: (sql: Sql) => healthFactorDistribution(sql) },
  'closest-to-liquidation': { needsPeriod: false, run: (sql: Sql) => closestToLiquidation(sql) },
  'holds-by-age': { needsPeriod: false, run: (sql: Sql) => holdsByAge(sql) },
} as const;
export type ReportName = keyof typeof REPORTS;
