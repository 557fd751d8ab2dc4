-- Issue 19: what support staff see and may do in Supabase (Studio, or a support console on
-- supabase-js). Support is an authenticated user whose JWT has app_metadata.role = 'support'
-- (private.is_support()); everything here is checked as that caller, under RLS.
--
-- What support sees is the Supabase projection (profiles, card_controls, account_summaries,
-- account_activity), never the financial database: Supabase is where staff have personal logins,
-- JWTs and RLS, and the projection already holds what a cardholder on the phone asks about, in
-- numbers fit to show; the ledger, the audit log and the program's controls stay in the financial
-- database, reached by operators with `npm run ops` (docs/operations.md, "Support").
--
-- The views are security_invoker (the caller's privileges and RLS apply, not the owner's) and filter
-- on private.is_support() too, so a cardholder querying them gets no rows, not even their own.
-- Money is in dollars: numeric(21, 2) from bigint cents, exact (a bigint of cents has at most 19 digits).
-- Support writes nothing directly; its one action is public.support_freeze_card, which requires a
-- reason and appends to private.support_actions (append-only) in the same transaction.

-- Email lookups by support (and by `npm run ops -- find-user <email>`) are case-insensitive.
create index profiles_email_lower_idx on public.profiles (lower(email));

-- ── The support actions log: who did what to which user, and why. Append-only for everyone,
-- the owner included (as the financial audit_log). No foreign key: the record outlives the user.
create table private.support_actions (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  actor_id uuid not null,
  actor_email text,
  action text not null check (action in ('card_frozen')),
  user_id uuid not null,
  reason text not null check (char_length(reason) between 3 and 500),
  -- False when the card was already frozen (the request is still on record).
  changed boolean not null
);

create index support_actions_user_idx on private.support_actions (user_id, at desc);

comment on table private.support_actions is
  'Append-only log of actions taken by support staff through audited functions (public.support_freeze_card).';

create function private.support_actions_append_only()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception 'private.support_actions is append-only' using errcode = '42501';
end
$$;

revoke all on function private.support_actions_append_only() from public, anon, authenticated, service_role;

create trigger support_actions_no_update_delete
  before update or delete on private.support_actions
  for each row execute function private.support_actions_append_only();

create trigger support_actions_no_truncate
  before truncate on private.support_actions
  for each statement execute function private.support_actions_append_only();

alter table private.support_actions enable row level security;
revoke all on table private.support_actions from public, anon, authenticated, service_role;
-- Read through public.support_actions (security_invoker): the caller needs select here, and RLS
-- shows rows to support only.
grant select on table private.support_actions to authenticated;

create policy support_actions_select_support on private.support_actions
  for select to authenticated
  using ((select private.is_support()));

-- ── support_accounts: one row per signed-up user.
create view public.support_accounts with (security_invoker = true) as
select
  p.id as user_id,
  p.email,
  p.display_name,
  p.kyc_status,
  p.created_at as signed_up_at,
  s.account_status,
  s.card_status,
  c.frozen as user_frozen,
  (c.daily_limit_cents::numeric / 100)::numeric(21, 2) as requested_daily_limit_dollars,
  c.blocked_mccs,
  (s.collateral_value_cents::numeric / 100)::numeric(21, 2) as collateral_value_dollars,
  (s.borrow_power_cents::numeric / 100)::numeric(21, 2) as borrow_power_dollars,
  (s.credit_limit_cents::numeric / 100)::numeric(21, 2) as credit_limit_dollars,
  (s.debt_onchain_cents::numeric / 100)::numeric(21, 2) as debt_onchain_dollars,
  (s.unsettled_cents::numeric / 100)::numeric(21, 2) as unsettled_dollars,
  (s.holds_cents::numeric / 100)::numeric(21, 2) as holds_dollars,
  (s.available_cents::numeric / 100)::numeric(21, 2) as available_dollars,
  s.health_factor,
  s.health_notice,
  s.stale_asset_ids,
  s.as_of
from public.profiles p
left join public.account_summaries s on s.user_id = p.id
left join public.card_controls c on c.user_id = p.id
where (select private.is_support());

comment on view public.support_accounts is
  'Support staff only: one row per signed-up user, with the credit summary in dollars. Read-only; actions go through public.support_freeze_card.';
comment on column public.support_accounts.user_id is 'The user''s id (Supabase auth id = financial user id; give it to ops for npm run ops -- show-user).';
comment on column public.support_accounts.email is 'The sign-in email.';
comment on column public.support_accounts.display_name is 'The name the user chose (may be empty).';
comment on column public.support_accounts.kyc_status is 'Identity check: none, pending, verified or rejected.';
comment on column public.support_accounts.signed_up_at is 'When the user signed up.';
comment on column public.support_accounts.account_status is 'active, suspended (by the program: every card declines) or closed; empty before the first sync.';
comment on column public.support_accounts.card_status is 'none (no card yet), active, frozen (by the user or the program), inactive or canceled.';
comment on column public.support_accounts.user_frozen is 'True when the user (or support on their behalf) froze their cards. A program freeze is not shown here: see card_status.';
comment on column public.support_accounts.requested_daily_limit_dollars is 'The daily limit the user asked for (empty: the program default). The program''s ceiling and cool-down may keep the limit in force lower.';
comment on column public.support_accounts.blocked_mccs is 'Merchant category codes the user blocked.';
comment on column public.support_accounts.collateral_value_dollars is 'What the deposited collateral is worth at current prices (a stale price counts as zero).';
comment on column public.support_accounts.borrow_power_dollars is 'Collateral value times each asset''s loan-to-value: the most the collateral lets the user spend.';
comment on column public.support_accounts.credit_limit_dollars is 'The program''s cap on the user''s credit.';
comment on column public.support_accounts.debt_onchain_dollars is 'Spend already recorded on-chain by the vault.';
comment on column public.support_accounts.unsettled_dollars is 'Captured card spend not yet recorded on-chain.';
comment on column public.support_accounts.holds_dollars is 'Authorizations approved and not yet captured or released.';
comment on column public.support_accounts.available_dollars is 'What the user can spend now: the lower of credit limit and borrow power, minus debt, unsettled and holds. Negative when over-drawn.';
comment on column public.support_accounts.health_factor is 'Collateral at the liquidation threshold divided by all debt including holds; below 1 the position is liquidated. Empty without debt.';
comment on column public.support_accounts.health_notice is 'warning (close to liquidation), liquidation (below 1: no credit, being liquidated) or empty.';
comment on column public.support_accounts.stale_asset_ids is 'Assets whose price is stale: they count as worth zero until the price is fresh again.';
comment on column public.support_accounts.as_of is 'When these numbers were read from the financial database.';

-- ── support_activity: recent activity of every user, newest first per user.
create view public.support_activity with (security_invoker = true) as
select
  a.id,
  a.user_id,
  p.email,
  p.display_name,
  a.kind,
  a.status,
  a.outcome,
  (a.amount_cents::numeric / 100)::numeric(21, 2) as amount_dollars,
  a.asset_id,
  a.amount_base,
  a.merchant_name,
  a.merchant_category_code,
  a.authorization_id,
  a.decline_code,
  a.decline_message,
  a.occurred_at
from public.account_activity a
left join public.profiles p on p.id = a.user_id
where (select private.is_support());

comment on view public.support_activity is
  'Support staff only: each user''s recent activity (authorizations, captures, refunds, deposits, withdrawals, liquidations), amounts in dollars.';
comment on column public.support_activity.id is 'The item''s key: authorization:<id>, the ledger reference of a capture or refund, or the chain event.';
comment on column public.support_activity.user_id is 'The user''s id.';
comment on column public.support_activity.email is 'The user''s sign-in email.';
comment on column public.support_activity.display_name is 'The user''s chosen name.';
comment on column public.support_activity.kind is 'authorization, capture, refund, deposit, withdrawal or liquidation.';
comment on column public.support_activity.status is 'Authorizations: pending, closed, reversed, expired. Captures and refunds: posted. Chain events: pending or confirmed.';
comment on column public.support_activity.outcome is 'Authorizations only: approved, partial or declined.';
comment on column public.support_activity.amount_dollars is 'The amount in dollars (approved amount, or the requested amount of a decline). Empty for token movements.';
comment on column public.support_activity.asset_id is 'Deposits, withdrawals, liquidations: the collateral asset.';
comment on column public.support_activity.amount_base is 'Deposits, withdrawals, liquidations: the token amount in the token''s smallest unit.';
comment on column public.support_activity.merchant_name is 'The merchant, as the card network reported it.';
comment on column public.support_activity.merchant_category_code is 'The merchant category code (e.g. 5411 groceries).';
comment on column public.support_activity.authorization_id is 'The card authorization (iauth_…) this item belongs to.';
comment on column public.support_activity.decline_code is 'Why we declined (e.g. insufficient_credit, card_frozen).';
comment on column public.support_activity.decline_message is 'What the user was told about the decline.';
comment on column public.support_activity.occurred_at is 'When it happened.';

-- ── support_actions: the actions log, readable by support.
create view public.support_actions with (security_invoker = true) as
select
  sa.id,
  sa.at,
  sa.actor_id,
  sa.actor_email,
  sa.action,
  sa.user_id,
  p.email as user_email,
  sa.reason,
  sa.changed
from private.support_actions sa
left join public.profiles p on p.id = sa.user_id
where (select private.is_support());

comment on view public.support_actions is 'Support staff only: every action support took, with who and why (append-only).';
comment on column public.support_actions.id is 'Sequence number of the action.';
comment on column public.support_actions.at is 'When the action was taken.';
comment on column public.support_actions.actor_id is 'The support user who took it.';
comment on column public.support_actions.actor_email is 'That support user''s email at the time.';
comment on column public.support_actions.action is 'What was done: card_frozen.';
comment on column public.support_actions.user_id is 'The cardholder it was done to.';
comment on column public.support_actions.user_email is 'The cardholder''s email.';
comment on column public.support_actions.reason is 'Why, as the support user wrote it.';
comment on column public.support_actions.changed is 'False when nothing changed (the cards were already frozen).';

-- Supabase grants everything on new objects in public to the API roles: take it back. The views
-- are read-only for authenticated callers (and show rows only to support).
revoke all on table public.support_accounts, public.support_activity, public.support_actions
  from public, anon, authenticated, service_role;
grant select on table public.support_accounts, public.support_activity, public.support_actions to authenticated;

-- ── The one support action: freeze a cardholder's cards on their behalf (a lost or stolen card
-- reported by phone). It is the user's own freeze (card_controls.frozen), so it travels the way a
-- user's freeze does — the card_controls triggers append to the outbox and the bridge applies it to
-- the financial database and the hot path's Redis within a second. Support can only tighten: there is
-- no support unfreeze (the cardholder unfreezes in the app once they have their card back), and no
-- program control (ops freeze, suspension, credit limit) is reachable from Supabase at all — those are
-- operator commands (`npm run ops`), audited in the financial database.
create function public.support_freeze_card(target_user_id uuid, freeze_reason text)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  actor uuid := auth.uid();
  why text := btrim(coalesce(freeze_reason, ''));
  was_frozen boolean;
begin
  if actor is null or not private.is_support() then
    raise exception 'support_freeze_card: only support staff may freeze a card' using errcode = '42501';
  end if;
  if char_length(why) < 3 or char_length(why) > 500 then
    raise exception 'support_freeze_card: a reason of 3 to 500 characters is required' using errcode = '22023';
  end if;
  select c.frozen into was_frozen from public.card_controls c where c.user_id = target_user_id for update;
  if not found then
    raise exception 'support_freeze_card: no user %', target_user_id using errcode = 'P0002';
  end if;
  if not was_frozen then
    update public.card_controls set frozen = true where user_id = target_user_id;
  end if;
  insert into private.support_actions (actor_id, actor_email, action, user_id, reason, changed)
  values (actor, (select u.email from auth.users u where u.id = actor), 'card_frozen', target_user_id, why,
    not was_frozen);
  return case when was_frozen then 'already_frozen' else 'frozen' end;
end
$$;

comment on function public.support_freeze_card(uuid, text) is
  'Support staff only: freeze all of a cardholder''s cards on their behalf, with a reason (3..500 characters). Recorded in support_actions. Returns frozen or already_frozen.';

revoke all on function public.support_freeze_card(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.support_freeze_card(uuid, text) to authenticated;
