-- TEST-ONLY. What the hosted Supabase platform (GoTrue, PostgREST, the supabase/postgres image) provides
-- before our migrations run: the API roles, the `auth` schema with the columns of `auth.users` we use,
-- `auth.uid()` / `auth.jwt()` / `auth.role()` reading PostgREST's `request.jwt.claims`, and Supabase's
-- default grants (every new table in `public` is granted to anon, authenticated and service_role, so
-- RLS and our explicit revokes are the only protection — exactly as on a real project).
-- It is never part of supabase/migrations and never runs against a real Supabase project.

-- Roles are cluster-wide and test files run in parallel: serialise this part and tolerate a winner.
select pg_advisory_xact_lock(7431100);

do $$
declare
  r record;
begin
  for r in
    select * from (values
      ('anon', false),
      ('authenticated', false),
      ('service_role', true)
    ) as t (name, bypass)
  loop
    if not exists (select 1 from pg_roles where rolname = r.name) then
      begin
        execute format('create role %I nologin noinherit %s', r.name, case when r.bypass then 'bypassrls' else '' end);
      exception when duplicate_object or unique_violation then
        null;
      end;
    end if;
  end loop;
end $$;

create schema if not exists auth;
create schema if not exists extensions;

create table if not exists auth.users (
  instance_id uuid,
  id uuid primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_anonymous boolean not null default false,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  deleted_at timestamptz
);

-- The definitions Supabase ships (supabase/postgres `auth` schema migrations).
create or replace function auth.uid() returns uuid language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.jwt() returns jsonb language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;
grant usage on schema public, extensions to anon, authenticated, service_role;

-- Supabase's permissive defaults in `public`: the API roles get everything on new objects.
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
