-- Run once after `npm run db:migrate` (which creates the roles, LOGIN without a password) by the
-- compose job `db-roles` or by hand: psql -v ON_ERROR_STOP=1 -v hot_path_password=… (one variable per
-- role below) -v statement_timeout_ms=5000 -f deploy/postgres/service-roles.sql
-- Gives each service role its password, and its statement_timeout in Postgres: through PgBouncer the
-- timeout a service sends at connect (DATABASE_STATEMENT_TIMEOUT_MS) is ignored (pgbouncer.ini), and a
-- role setting survives PgBouncer's DISCARD ALL between clients.
ALTER ROLE credana_hot_path PASSWORD :'hot_path_password';
ALTER ROLE credana_ledger_writer PASSWORD :'ledger_writer_password';
ALTER ROLE credana_indexer PASSWORD :'indexer_password';
ALTER ROLE credana_settlement PASSWORD :'settlement_password';
ALTER ROLE credana_liquidator PASSWORD :'liquidator_password';
ALTER ROLE credana_withdrawals PASSWORD :'withdrawals_password';
ALTER ROLE credana_supabase_sync PASSWORD :'supabase_sync_password';
ALTER ROLE credana_reconciliation PASSWORD :'reconciliation_password';

-- credana_reconciliation is left out: the scheduler connects to the primary directly (not through
-- PgBouncer), so its own timeouts apply, including the analytics job's 600 s.
ALTER ROLE credana_hot_path SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_ledger_writer SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_indexer SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_settlement SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_liquidator SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_withdrawals SET statement_timeout = :'statement_timeout_ms';
ALTER ROLE credana_supabase_sync SET statement_timeout = :'statement_timeout_ms';
