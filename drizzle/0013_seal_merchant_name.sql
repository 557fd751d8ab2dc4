-- Seals authorizations.merchant_name (docs/operations.md "Encryption at rest"; issue 18). The plaintext
-- column goes; `merchant_name_sealed` holds AES-256-GCM ciphertext under a data key of `data_keys`
-- (shared/hsm/merchant-names.ts). SQL cannot seal (the data keys open only in the HSM), so the names
-- already stored move to `merchant_names_unsealed`, which the ledger writer seals and empties as soon as
-- it runs with the token; the hot path's Postgres fallback writes there too (it never holds a data key).
CREATE TABLE "merchant_names_unsealed" (
	"authorization_id" text PRIMARY KEY NOT NULL,
	"merchant_name" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "authorizations" ADD COLUMN "merchant_name_sealed" "bytea";--> statement-breakpoint
ALTER TABLE "merchant_names_unsealed" ADD CONSTRAINT "merchant_names_unsealed_authorization_id_authorizations_id_fk" FOREIGN KEY ("authorization_id") REFERENCES "public"."authorizations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
INSERT INTO "merchant_names_unsealed" ("authorization_id", "merchant_name", "created_at")
	SELECT "id", "merchant_name", "created_at" FROM "authorizations" WHERE "merchant_name" IS NOT NULL;--> statement-breakpoint
ALTER TABLE "authorizations" DROP COLUMN "merchant_name";--> statement-breakpoint
-- Oldest first is how the writer seals them.
CREATE INDEX "merchant_names_unsealed_created_idx" ON "merchant_names_unsealed" ("created_at");--> statement-breakpoint
-- The plaintext waiting to be sealed: written by the two writers of authorizations, read and deleted
-- only by the ledger writer. Not support (it reads authorizations in bulk: ciphertext only), not
-- reconciliation (0001's SELECT ON ALL TABLES covered the tables of that time, not this one).
REVOKE ALL ON "merchant_names_unsealed" FROM PUBLIC;--> statement-breakpoint
GRANT INSERT ON "merchant_names_unsealed" TO credana_hot_path;--> statement-breakpoint
GRANT SELECT, INSERT, DELETE ON "merchant_names_unsealed" TO credana_ledger_writer;--> statement-breakpoint
-- The data keys, wrapped (useless without the HSM), to exactly the roles that seal or open a column:
-- the ledger writer seals merchant names, the Supabase sync opens them for the user's projection.
-- The operator's `npm run ops -- show-user` connects with the operator's own role (not a service role).
GRANT SELECT ON "data_keys" TO credana_ledger_writer, credana_supabase_sync;--> statement-breakpoint
COMMENT ON COLUMN "authorizations"."merchant_name_sealed" IS 'Sealed merchant name (AES-256-GCM, shared/hsm/merchant-names.ts); plaintext only through the HSM';
