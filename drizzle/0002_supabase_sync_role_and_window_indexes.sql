-- The Supabase bridge and projection sync (supabase/sync/) run as their own least-privilege role:
-- they create financial users, copy card controls (freeze, limits, blocked categories), append audit
-- rows, and read what the dashboard projection shows. They never write the ledger.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credana_supabase_sync') THEN
		CREATE ROLE credana_supabase_sync LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
	END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
	-- Another database of this cluster created it at the same moment.
	NULL;
END $$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO credana_supabase_sync;
--> statement-breakpoint
GRANT SELECT ON users, cards, assets, prices, positions, credit_accounts, authorizations, decisions,
	ledger_transfers, ledger_entries, chain_events TO credana_supabase_sync;
--> statement-breakpoint
GRANT INSERT, UPDATE ON users TO credana_supabase_sync;
--> statement-breakpoint
GRANT UPDATE (frozen, updated_at) ON cards TO credana_supabase_sync;
--> statement-breakpoint
GRANT INSERT ON audit_log TO credana_supabase_sync;
--> statement-breakpoint
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO credana_supabase_sync;
--> statement-breakpoint
-- The settlement worker (indexer/settlement/) reads captured spend and records its own progress; the
-- indexer, not the worker, moves money between unsettled and on-chain debt.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credana_settlement') THEN
		CREATE ROLE credana_settlement LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
	END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
	NULL;
END $$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO credana_settlement;
--> statement-breakpoint
GRANT SELECT ON ledger_transfers, ledger_entries, wallets, card_events, users TO credana_settlement;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE ON settlements TO credana_settlement;
