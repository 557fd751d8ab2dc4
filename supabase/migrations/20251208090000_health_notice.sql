-- Issue 14: the user sees the health of their position. The projection sync (supabase/sync/) writes
-- a notice when the health factor falls below the warning line (HEALTH_FACTOR_WARNING_BPS) and when
-- it falls below 1 (the card's credit is gone; the position is being liquidated), and each
-- liquidation the vault booked appears in the activity feed.

alter table public.account_summaries
  add column health_notice text check (health_notice in ('warning', 'liquidation'));

comment on column public.account_summaries.health_notice is
  'null when healthy (or no debt, or a stale price: see stale_asset_ids); warning below HEALTH_FACTOR_WARNING_BPS; liquidation below a health factor of 1 (no credit, liquidation under way).';

alter table public.account_activity drop constraint account_activity_kind_check;
alter table public.account_activity add constraint account_activity_kind_check
  check (kind in ('authorization', 'capture', 'refund', 'deposit', 'withdrawal', 'liquidation'));

comment on table public.account_activity is
  'Recent activity per user (authorizations with outcome, captures, refunds, deposits, withdrawals, liquidations) projected by the sync worker.';
