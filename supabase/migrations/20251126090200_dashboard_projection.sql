-- The dashboard's read-only projection of the financial database. Written only by the projection
-- sync (supabase/sync/projection-sync.ts); the user reads their own rows, support reads all rows.
-- There is no ledger here: only numbers fit to show the user.

create table public.account_summaries (
  user_id uuid primary key references auth.users (id) on delete cascade,
  account_status text not null check (account_status in ('active', 'suspended', 'closed')),
  -- 'frozen' when the user froze their card; 'none' before a card is issued.
  card_status text not null check (card_status in ('none', 'active', 'frozen', 'inactive', 'canceled')),
  collateral_value_cents bigint not null,
  borrow_power_cents bigint not null,
  credit_limit_cents bigint not null,
  debt_onchain_cents bigint not null,
  unsettled_cents bigint not null,
  holds_cents bigint not null,
  -- min(credit limit, borrow power) − debt − unsettled − holds; negative when over-drawn.
  available_cents bigint not null,
  -- Σ value × liquidation threshold ÷ total debt incl. holds; null when there is no debt.
  health_factor numeric,
  -- Assets whose price was missing or stale: they counted as zero.
  stale_asset_ids text[] not null default '{}',
  -- The financial database's time at which these numbers were read.
  as_of timestamptz not null,
  synced_at timestamptz not null default now()
);

comment on table public.account_summaries is
  'Per-user credit summary projected from the financial database by the sync worker. Read-only for users and support.';

create table public.account_activity (
  -- Natural key from the financial database: 'authorization:iauth_…', the ledger ref of a capture
  -- or refund ('capture:…'), or 'chain:<chain id>:<block hash>:<log index>'.
  id text primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  kind text not null check (kind in ('authorization', 'capture', 'refund', 'deposit', 'withdrawal')),
  -- Authorizations: pending, closed, reversed, expired. Chain events: pending (unconfirmed), confirmed.
  -- Captures and refunds: posted.
  status text not null,
  outcome text check (outcome in ('approved', 'partial', 'declined')),
  amount_cents bigint,
  asset_id text,
  -- Token base units as a decimal string: exact beyond JavaScript's safe integers.
  amount_base text check (amount_base ~ '^[0-9]{1,78}$'),
  merchant_name text,
  merchant_category_code text,
  authorization_id text,
  decline_code text,
  -- What we tell the user about a decline (never the internal reason text).
  decline_message text,
  occurred_at timestamptz not null,
  synced_at timestamptz not null default now()
);

comment on table public.account_activity is
  'Recent activity per user (authorizations with outcome, captures, refunds, deposits, withdrawals) projected by the sync worker.';

create index account_activity_user_time_idx on public.account_activity (user_id, occurred_at desc);

alter table public.account_summaries enable row level security;
alter table public.account_activity enable row level security;

revoke all on table public.account_summaries, public.account_activity from anon, authenticated, service_role;
grant select on table public.account_summaries, public.account_activity to authenticated;
grant select, insert, update, delete on table public.account_summaries, public.account_activity to service_role;

create policy account_summaries_select_own_or_support on public.account_summaries
  for select to authenticated
  using (user_id = (select auth.uid()) or (select private.is_support()));

create policy account_activity_select_own_or_support on public.account_activity
  for select to authenticated
  using (user_id = (select auth.uid()) or (select private.is_support()));
