-- Local development seed (`supabase db reset` runs it after the migrations; config.toml [db.seed]).
-- Two people, created the way Supabase Auth creates users, so the sign-up trigger makes their
-- profiles and card controls (and, once the bridge runs, their financial users):
-- - dev@credana.test, an ordinary cardholder;
-- - support@credana.test, with the support role in app_metadata (reads every user's projection).
-- They sign in with a magic link (Inbucket/Mailpit at http://127.0.0.1:54324 on `supabase start`).

insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, email_confirmed_at,
  created_at, updated_at)
values
  ('00000000-0000-0000-0000-000000000000', '11111111-1111-4111-8111-111111111111', 'authenticated', 'authenticated',
    'dev@credana.test', '{"provider": "email", "providers": ["email"]}', '{"display_name": "Dev Cardholder"}', now(),
    now(), now()),
  ('00000000-0000-0000-0000-000000000000', '22222222-2222-4222-8222-222222222222', 'authenticated', 'authenticated',
    'support@credana.test', '{"provider": "email", "providers": ["email"], "role": "support"}',
    '{"display_name": "Support Desk"}', now(), now(), now())
on conflict (id) do nothing;
