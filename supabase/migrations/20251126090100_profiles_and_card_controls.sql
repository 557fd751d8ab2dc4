-- Identity and the user's own card controls.

-- ── profiles: one per auth.users row, created by the sign-up trigger below.
create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  -- Copied from auth.users (sign-up and email change); not editable here.
  email text,
  display_name text check (char_length(display_name) <= 80),
  avatar_url text check (char_length(avatar_url) <= 500 and avatar_url ~ '^https://'),
  locale text not null default 'en' check (locale ~ '^[a-z]{2}(-[A-Z]{2})?$'),
  -- Set by our back office (service role), never by the user.
  kyc_status text not null default 'none' check (kyc_status in ('none', 'pending', 'verified', 'rejected')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.profiles is
  'One per auth user. The user reads their own and edits display_name, avatar_url and locale; support reads all.';

create trigger profiles_touch_updated_at
  before update on public.profiles
  for each row execute function private.touch_updated_at();

alter table public.profiles enable row level security;

-- Supabase grants everything on new tables to the API roles; take it back and grant per column.
revoke all on table public.profiles from anon, authenticated, service_role;
grant select on table public.profiles to authenticated;
grant update (display_name, avatar_url, locale) on table public.profiles to authenticated;
grant select, insert, update, delete on table public.profiles to service_role;

create policy profiles_select_own_or_support on public.profiles
  for select to authenticated
  using (id = (select auth.uid()) or (select private.is_support()));

create policy profiles_update_own on public.profiles
  for update to authenticated
  using (id = (select auth.uid()))
  with check (id = (select auth.uid()));

-- ── card_controls: the user's switches, applied by the bridge to the financial database and to the
-- hot path's Redis. One row per user; the controls cover all of the user's cards.
create table public.card_controls (
  user_id uuid primary key references auth.users (id) on delete cascade,
  frozen boolean not null default false,
  -- null: the program's default daily limit.
  daily_limit_cents bigint check (daily_limit_cents between 0 and 100000000),
  -- Four-digit merchant category codes the user refuses, e.g. '{7995}' (gambling).
  blocked_mccs text[] not null default '{}' check (
    cardinality(blocked_mccs) <= 100
    and array_position(blocked_mccs, null) is null
    and array_to_string(blocked_mccs, ',') ~ '^([0-9]{4}(,[0-9]{4})*)?$'
  ),
  -- Increases with every change; the bridge logs which version it applied.
  version bigint not null default 1,
  updated_at timestamptz not null default now()
);

comment on table public.card_controls is
  'The user''s card controls (freeze, daily limit, blocked merchant categories). The user edits their own; support reads all.';

alter table public.card_controls enable row level security;

revoke all on table public.card_controls from anon, authenticated, service_role;
grant select on table public.card_controls to authenticated;
grant update (frozen, daily_limit_cents, blocked_mccs) on table public.card_controls to authenticated;
grant select, insert, update, delete on table public.card_controls to service_role;

create policy card_controls_select_own_or_support on public.card_controls
  for select to authenticated
  using (user_id = (select auth.uid()) or (select private.is_support()));

create policy card_controls_update_own on public.card_controls
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

create function private.card_controls_bump_version()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.version := old.version + 1;
  new.updated_at := now();
  return new;
end
$$;

revoke all on function private.card_controls_bump_version() from public, anon, authenticated, service_role;

create trigger card_controls_bump_version
  before update on public.card_controls
  for each row
  when ((old.frozen, old.daily_limit_cents, old.blocked_mccs)
    is distinct from (new.frozen, new.daily_limit_cents, new.blocked_mccs))
  execute function private.card_controls_bump_version();

-- Appends to the outbox in the changing transaction and wakes the bridge; the notification is
-- delivered at commit, and only then, so the bridge never sees an uncommitted change.
-- security definer: the user's own role has no access to credana_sync.
create function private.card_controls_enqueue()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into credana_sync.outbox (kind, user_id) values ('controls_changed', new.user_id);
  perform pg_notify('credana_bridge', 'controls_changed');
  return null;
end
$$;

revoke all on function private.card_controls_enqueue() from public, anon, authenticated, service_role;

create trigger card_controls_enqueue
  after update on public.card_controls
  for each row
  when ((old.frozen, old.daily_limit_cents, old.blocked_mccs)
    is distinct from (new.frozen, new.daily_limit_cents, new.blocked_mccs))
  execute function private.card_controls_enqueue();

-- ── Sign-up: Supabase Auth inserts into auth.users; we create the profile, the default controls,
-- and an outbox row that makes the bridge create the financial user with the same id.
-- The display name comes from user-supplied metadata, so it is trimmed to fit the check above:
-- a sign-up must never fail on what the user typed.
create function private.handle_new_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.profiles (id, email, display_name)
  values (new.id, new.email, left(nullif(btrim(new.raw_user_meta_data ->> 'display_name'), ''), 80))
  on conflict (id) do nothing;
  insert into public.card_controls (user_id) values (new.id) on conflict (user_id) do nothing;
  insert into credana_sync.outbox (kind, user_id) values ('user_created', new.id);
  perform pg_notify('credana_bridge', 'user_created');
  return null;
end
$$;

revoke all on function private.handle_new_user() from public, anon, authenticated, service_role;

create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.handle_new_user();

create function private.handle_user_email_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.profiles set email = new.email where id = new.id;
  return null;
end
$$;

revoke all on function private.handle_user_email_change() from public, anon, authenticated, service_role;

create trigger on_auth_user_email_changed
  after update of email on auth.users
  for each row
  when (old.email is distinct from new.email)
  execute function private.handle_user_email_change();
