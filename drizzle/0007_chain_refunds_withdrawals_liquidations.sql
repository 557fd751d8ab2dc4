CREATE TABLE "chain_refunds" (
	"ref" text PRIMARY KEY NOT NULL,
	"transfer_ref" text NOT NULL,
	"user_id" uuid NOT NULL,
	"amount_cents" bigint NOT NULL,
	"amount_usdc" numeric(78, 0) NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"transaction_hash" text,
	"nonce" integer,
	"attempts" integer DEFAULT 0 NOT NULL,
	"last_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "chain_refunds_amount_pos" CHECK ("chain_refunds"."amount_cents" > 0)
);
--> statement-breakpoint
CREATE TABLE "withdrawal_approvals" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"chain_id" integer NOT NULL,
	"request_id" numeric(78, 0) NOT NULL,
	"user_id" uuid NOT NULL,
	"account" text NOT NULL,
	"asset_id" text NOT NULL,
	"amount_base" numeric(78, 0) NOT NULL,
	"deadline" timestamp with time zone NOT NULL,
	"exposure_cents" bigint NOT NULL,
	"borrow_power_after_cents" bigint NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "chain_refunds" ADD CONSTRAINT "chain_refunds_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "withdrawal_approvals" ADD CONSTRAINT "withdrawal_approvals_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "chain_refunds_transfer_ref_idx" ON "chain_refunds" USING btree ("transfer_ref");--> statement-breakpoint
CREATE INDEX "chain_refunds_status_idx" ON "chain_refunds" USING btree ("status","created_at");--> statement-breakpoint
CREATE INDEX "withdrawal_approvals_request_idx" ON "withdrawal_approvals" USING btree ("chain_id","request_id");--> statement-breakpoint
-- The settlement worker claims and sends refunds, and books a capture of a user without a wallet to
-- the receivable account (a ledger transfer and the unsettled cents it moves, then the cached account
-- from positions). The indexer confirms refunds. The withdrawal approval service (its own role) reads
-- the credit inputs, builds a missing cached account, and records what it signed.
GRANT SELECT, INSERT, UPDATE ON chain_refunds TO credana_settlement;
--> statement-breakpoint
GRANT SELECT, INSERT ON ledger_transfers, ledger_entries TO credana_settlement;
--> statement-breakpoint
GRANT SELECT, UPDATE ON credit_accounts TO credana_settlement;
--> statement-breakpoint
GRANT SELECT ON positions TO credana_settlement;
--> statement-breakpoint
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO credana_settlement;
--> statement-breakpoint
GRANT SELECT, UPDATE ON chain_refunds TO credana_indexer;
--> statement-breakpoint
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credana_withdrawals') THEN
		CREATE ROLE credana_withdrawals LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
	END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
	NULL;
END $$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO credana_withdrawals;
--> statement-breakpoint
GRANT SELECT ON users, cards, authorizations, wallets, assets, prices, positions, credit_accounts,
	ledger_entries TO credana_withdrawals;
--> statement-breakpoint
GRANT SELECT, INSERT ON withdrawal_approvals TO credana_withdrawals;
--> statement-breakpoint
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO credana_withdrawals;
--> statement-breakpoint
GRANT SELECT ON chain_refunds, withdrawal_approvals TO credana_reconciliation;

--> statement-breakpoint
CREATE TABLE "liquidations" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"chain_id" integer NOT NULL,
	"user_id" uuid NOT NULL,
	"account" text NOT NULL,
	"asset_id" text NOT NULL,
	"collateral_seized_base" numeric(78, 0) NOT NULL,
	"debt_covered_usdc" numeric(78, 0) NOT NULL,
	"health_factor_wad" numeric(78, 0) NOT NULL,
	"status" text NOT NULL,
	"transaction_hash" text NOT NULL,
	"nonce" integer NOT NULL,
	"last_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "liquidations" ADD CONSTRAINT "liquidations_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "liquidations_in_flight_idx" ON "liquidations" USING btree ("chain_id","user_id") WHERE status = 'sent';--> statement-breakpoint
CREATE INDEX "liquidations_status_idx" ON "liquidations" USING btree ("status","created_at");--> statement-breakpoint
-- The liquidator service: reads the indexed positions, prices and on-chain debt, records what it sends.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credana_liquidator') THEN
		CREATE ROLE credana_liquidator LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
	END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
	NULL;
END $$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO credana_liquidator;
--> statement-breakpoint
GRANT SELECT ON wallets, assets, prices, positions, credit_accounts TO credana_liquidator;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE ON liquidations TO credana_liquidator;
--> statement-breakpoint
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO credana_liquidator;
--> statement-breakpoint
GRANT SELECT ON liquidations TO credana_reconciliation;
