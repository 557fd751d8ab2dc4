/**
 * Which analytics backend the connection offers: `timescaledb` when the extension is installed in
 * the database, else `native` (declarative partitioning + materialized views). One query layer runs
 * on both: the tables and views have the same names and columns either way.
 */
import type { Sql } from '../../shared/db/client.ts';

export type AnalyticsBackend = 'timescaledb' | 'native';

export async function detectBackend(sql: Sql): Promise<AnalyticsBackend> {
  const rows = await sql<
    { extname: string }[]
  >`select extname from pg_extension where extname = 'timescaledb'`;
  return rows.length > 0 ? 'timescaledb' : 'native';
}

export const SCHEMA = 'analytics';

/** The time-series tables: name → time column. Both backends partition them on that column. */
export const SERIES = {
  card_spend: 'occurred_at',
  decisions: 'decided_at',
  risk_snapshots: 'taken_at',
  hold_snapshots: 'taken_at',
} as const;
export type SeriesTable = keyof typeof SERIES;

/**
 * Table definitions shared by both backends. Primary keys include the time column, as both
 * declarative partitioning and hypertables require of unique constraints.
 */
export const TABLES_SQL = `
create schema if not exists analytics;
create table if not exists analytics.card_spend (
  occurred_at timestamptz not null,
  transfer_id bigint not null,
  user_id uuid not null,
  authorization_id text,
  transaction_id text,
  kind text not null check (kind in ('capture', 'refund')),
  -- Signed: a capture adds spend, a refund removes it.
  amount_cents bigint not null,
  merchant_category_code text not null,
  primary key (occurred_at, transfer_id)
) PARTITION_CLAUSE(occurred_at);
create table if not exists analytics.decisions (
  decided_at timestamptz not null,
  decision_id text not null,
  user_id uuid,
  approved boolean not null,
  reason text not null,
  requested_cents bigint not null,
  approved_cents bigint not null,
  source text not null,
  primary key (decided_at, decision_id)
) PARTITION_CLAUSE(decided_at);
create table if not exists analytics.risk_snapshots (
  taken_at timestamptz not null,
  user_id uuid not null,
  collateral_value_cents bigint not null,
  threshold_value_cents bigint not null,
  debt_cents bigint not null,
  available_cents bigint not null,
  -- Health factor × 10^18 (WAD); null when the user owes nothing.
  health_factor_wad numeric(78, 0),
  primary key (taken_at, user_id)
) PARTITION_CLAUSE(taken_at);
create table if not exists analytics.hold_snapshots (
  taken_at timestamptz not null,
  authorization_id text not null,
  user_id uuid not null,
  held_cents bigint not null,
  authorized_at timestamptz not null,
  expires_at timestamptz,
  primary key (taken_at, authorization_id)
) PARTITION_CLAUSE(taken_at);
create table if not exists analytics.snapshots (
  taken_at timestamptz primary key
);
create table if not exists analytics.watermarks (
  source text primary key,
  last_id text not null,
  updated_at timestamptz not null default now()
);
`;
