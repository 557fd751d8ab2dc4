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
