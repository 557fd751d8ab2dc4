-- Private schemas, never listed in the API's exposed schemas (config.toml `api.schemas`):
-- - `private`: helper functions that RLS policies call. The API roles may execute what is granted,
--   but nothing here can be reached through PostgREST.
-- - `credana_sync`: the bridges' outbox and the projection sync's cursors. No API role can reach it;
--   our workers connect to the database directly (SUPABASE_DB_URL) as the tables' owner.

create schema if not exists private;
revoke all on schema private from public, anon;
grant usage on schema private to authenticated, service_role;

create schema if not exists credana_sync;
revoke all on schema credana_sync from public, anon, authenticated, service_role;

-- True when the caller's JWT carries `app_metadata.role = 'support'`. `app_metadata` is writable only
-- with the service role key (unlike `user_metadata`, which a user can change), so a user cannot make
-- themselves support. security definer with an empty search_path, as Supabase's docs advise for
-- helpers used in policies; policies call it as `(select private.is_support())` so it runs once per
-- statement, not once per row.
create function private.is_support()
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce((auth.jwt() -> 'app_metadata' ->> 'role') = 'support', false)
$$;

revoke all on function private.is_support() from public, anon;
grant execute on function private.is_support() to authenticated, service_role;

-- Keeps `updated_at` honest whatever the client sends.
create function private.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

revoke all on function private.touch_updated_at() from public, anon, authenticated, service_role;

-- Transactional outbox: Supabase → financial. Triggers append a row in the same transaction as the
-- change (a sign-up, a card-control edit) and `pg_notify` the bridge, which applies the user's
-- current state to the financial database and Redis, then deletes the rows it handled. A bridge that
-- was down finds the rows on start, so no change is lost with a missed notification.
create table credana_sync.outbox (
  id bigint generated always as identity primary key,
  kind text not null check (kind in ('user_created', 'controls_changed')),
  user_id uuid not null,
  created_at timestamptz not null default clock_timestamp()
);

-- Progress of the projection sync (financial → Supabase), written in the same transaction as the
-- projection rows it covers, so a crash resumes exactly where the last committed batch ended.
-- `position`: every change in the financial database at or before it has been projected.
-- `pass_upper` / `pass_after_*`: the pass in progress (its upper bound and the last user done).
create table credana_sync.cursors (
  name text primary key,
  position timestamptz,
  pass_upper timestamptz,
  pass_after_ts timestamptz,
  pass_after_user uuid,
  updated_at timestamptz not null default now()
);

-- Not exposed, and no policy: only the owner (our workers) reads or writes these.
alter table credana_sync.outbox enable row level security;
alter table credana_sync.cursors enable row level security;
revoke all on all tables in schema credana_sync from public, anon, authenticated, service_role;
