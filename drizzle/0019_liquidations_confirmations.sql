-- A liquidation is `confirmed` only once its receipt is CHAIN_CONFIRMATIONS deep (docs/chaos.md L2: a row
-- marked confirmed at the first receipt stayed confirmed after a reorg dropped its block, and the account
-- was liquidated again). Until then it is `mined`, still in flight: the one-per-user index covers both
-- in-flight statuses. `block_number` is the receipt's block (confirmed rows within REORG_DEPTH_MAX of the
-- head are re-read for reorgs); `confirmed_at` is set once, at the first confirmation. Rows confirmed
-- before this migration have no block and are not re-read.
DROP INDEX "liquidations_in_flight_idx";--> statement-breakpoint
ALTER TABLE "liquidations" ADD COLUMN "block_number" bigint;--> statement-breakpoint
ALTER TABLE "liquidations" ADD COLUMN "confirmed_at" timestamp with time zone;--> statement-breakpoint
CREATE UNIQUE INDEX "liquidations_in_flight_idx" ON "liquidations" USING btree ("chain_id","user_id") WHERE status in ('sent', 'mined');
