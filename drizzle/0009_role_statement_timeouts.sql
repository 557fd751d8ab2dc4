-- Statement and idle-transaction timeouts per service role. A service connecting directly also sends
-- its configured DATABASE_STATEMENT_TIMEOUT_MS at start-up, which overrides these; behind PgBouncer's
-- transaction pooling (scripts/dev/pgbouncer.ts, docs/ledger.md "Connection pooling") startup
-- parameters cannot pass, and these are what bound a statement. Roles are cluster-wide: these settings
-- apply in every database of the cluster.
ALTER ROLE credana_hot_path SET statement_timeout = '5s';
--> statement-breakpoint
ALTER ROLE credana_ledger_writer SET statement_timeout = '5s';
--> statement-breakpoint
ALTER ROLE credana_indexer SET statement_timeout = '5s';
--> statement-breakpoint
ALTER ROLE credana_settlement SET statement_timeout = '5s';
--> statement-breakpoint
ALTER ROLE credana_liquidator SET statement_timeout = '5s';
--> statement-breakpoint
ALTER ROLE credana_withdrawals SET statement_timeout = '5s';
--> statement-breakpoint
ALTER ROLE credana_supabase_sync SET statement_timeout = '5s';
--> statement-breakpoint
-- Reconciliation reads every user's books in one statement (scripts/reconcile/index.ts uses 60 s).
ALTER ROLE credana_reconciliation SET statement_timeout = '60s';
--> statement-breakpoint
ALTER ROLE credana_support_ro SET statement_timeout = '30s';
--> statement-breakpoint
-- A transaction left open holds a row lock and, behind PgBouncer, a pooled server connection.
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['credana_hot_path', 'credana_ledger_writer', 'credana_indexer',
		'credana_settlement', 'credana_liquidator', 'credana_withdrawals', 'credana_supabase_sync',
		'credana_reconciliation', 'credana_support_ro']
	LOOP
		EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', r, '60s');
	END LOOP;
END $$;
