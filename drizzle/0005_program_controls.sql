ALTER TABLE "cards" ADD COLUMN "ops_frozen" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "cards" ADD COLUMN "ops_frozen_reason" text;--> statement-breakpoint
ALTER TABLE "cards" ADD COLUMN "ops_frozen_by" text;--> statement-breakpoint
ALTER TABLE "cards" ADD COLUMN "ops_frozen_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "daily_limit_pending_cents" bigint;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "daily_limit_pending_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "daily_limit_ceiling_cents" bigint;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "controls_version" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "users_daily_limit_pending_at_idx" ON "users" USING btree ("daily_limit_pending_at") WHERE "users"."daily_limit_pending_at" is not null;--> statement-breakpoint
ALTER TABLE "users" ADD CONSTRAINT "users_daily_limit_ceiling_nonneg" CHECK ("users"."daily_limit_ceiling_cents" >= 0);--> statement-breakpoint
ALTER TABLE "users" ADD CONSTRAINT "users_daily_limit_pending_pair" CHECK (("users"."daily_limit_pending_cents" is null) = ("users"."daily_limit_pending_at" is null));--> statement-breakpoint
-- Users the bridge created before the ceiling existed get the program's default ceiling
-- (DAILY_LIMIT_CEILING_CENTS_DEFAULT's default, $10,000): a daily limit a user raised beyond it is
-- capped from now on. Ops lift it per user with `npm run ops -- set-daily-ceiling`.
UPDATE "users" SET "daily_limit_ceiling_cents" = 1000000 WHERE "daily_limit_ceiling_cents" IS NULL;
--> statement-breakpoint
-- The program outranks the user (ARCHITECTURE.md invariant 9): the Supabase bridge's role keeps
-- writing the user's own controls and may no longer write the program's (status, credit limit,
-- ceiling); on cards it already could write only the user's `frozen`.
REVOKE INSERT, UPDATE ON users FROM credana_supabase_sync;
--> statement-breakpoint
GRANT INSERT (id, credit_limit_cents, daily_limit_cents, daily_limit_ceiling_cents, blocked_mccs)
	ON users TO credana_supabase_sync;
--> statement-breakpoint
GRANT UPDATE (daily_limit_cents, daily_limit_pending_cents, daily_limit_pending_at, blocked_mccs,
	controls_version, updated_at) ON users TO credana_supabase_sync;
