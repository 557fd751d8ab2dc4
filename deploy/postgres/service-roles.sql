-- Run after every `npm run db:migrate` (which creates the roles, LOGIN without a password) by the
-- compose job `db-roles` or by hand:
--   psql -v ON_ERROR_STOP=1 -v hot_path_password=… (one variable per role below) -f deploy/postgres/service-roles.sql
-- Gives each service role its password: PgBouncer (auth_type scram-sha-256) and the direct connections
-- log in with them. The same passwords go in PgBouncer's userlist.txt.
--
-- Statement timeouts are NOT set here any more: migration drizzle/0009 sets each role's
-- statement_timeout (5 s for the services, 60 s for reconciliation) and
-- idle_in_transaction_session_timeout, which is what bounds a statement through PgBouncer (it ignores
-- the startup parameter). The optional `-v statement_timeout_ms=N` below still overrides the services'
-- 5 s for a deployment that needs another bound without a migration; leave it out normally. It never
-- touches credana_reconciliation (its jobs connect directly and set their own, 600 s for analytics).
ALTER ROLE credana_hot_path PASSWORD :'hot_path_password';
ALTER ROLE credana_ledger_writer PASSWORD :'ledger_writer_password';
ALTER ROLE credana_indexer PASSWORD :'indexer_password';
ALTER ROLE credana_settlement PASSWORD :'settlement_password';
ALTER ROLE credana_liquidator PASSWORD :'liquidator_password';
ALTER ROLE credana_withdrawals PASSWORD :'withdrawals_password';
ALTER ROLE credana_supabase_sync PASSWORD :'supabase_sync_password';
ALTER ROLE credana_reconciliation PASSWORD :'reconciliation_password';

\if :{?statement_timeout_ms}
ALTER ROLE credana_hot_path SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_ledger_writer SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_indexer SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_settlement SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_liquidator SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_withdrawals SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_supabase_sync SET statement_timeout = :'statement_timeout_ms';
\endif
