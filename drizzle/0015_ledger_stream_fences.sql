CREATE TABLE "ledger_stream_fences" (
	"stream" text PRIMARY KEY NOT NULL,
	"epoch" bigint NOT NULL,
	"owner" text NOT NULL,
	"taken_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
-- The ledger writer takes shards over (insert, or update to a higher epoch) and checks its epoch in
-- every transaction; reconciliation may read who holds what.
GRANT SELECT, INSERT, UPDATE ON ledger_stream_fences TO credana_ledger_writer;
--> statement-breakpoint
GRANT SELECT ON ledger_stream_fences TO credana_reconciliation;
--> statement-breakpoint
REVOKE ALL ON ledger_stream_fences FROM PUBLIC;
--> statement-breakpoint
COMMENT ON TABLE ledger_stream_fences IS 'Fencing epochs of the ledger writers'' outbox shards; see hot-path/ledger-writer/shards.ts';
