CREATE TABLE "fallback_decisions" (
	"decision_id" text PRIMARY KEY NOT NULL,
	"event_id" text NOT NULL,
	"authorization_id" text NOT NULL,
	"user_id" uuid NOT NULL,
	"granted_cents" bigint NOT NULL,
	"hold_expires_at" timestamp with time zone NOT NULL,
	"stored" text NOT NULL,
	"decided_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"adopted_at" timestamp with time zone,
	CONSTRAINT "fallback_decisions_granted_nonneg" CHECK ("fallback_decisions"."granted_cents" >= 0)
);
--> statement-breakpoint
CREATE TABLE "redis_deciders" (
	"holder" text PRIMARY KEY NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"renewed_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "fallback_decisions" ADD CONSTRAINT "fallback_decisions_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "fallback_decisions_event_idx" ON "fallback_decisions" USING btree ("event_id");--> statement-breakpoint
CREATE INDEX "fallback_decisions_pending_idx" ON "fallback_decisions" USING btree ("user_id") WHERE adopted_at is null;--> statement-breakpoint
-- The hot path writes its fallback decisions and its own lease, adopts pending decisions (adopted_at)
-- and removes its lease when it stops. Reconciliation and support read them.
GRANT SELECT, INSERT, UPDATE ON fallback_decisions, redis_deciders TO credana_hot_path;
--> statement-breakpoint
GRANT DELETE ON redis_deciders TO credana_hot_path;
--> statement-breakpoint
GRANT SELECT ON fallback_decisions, redis_deciders TO credana_reconciliation;
