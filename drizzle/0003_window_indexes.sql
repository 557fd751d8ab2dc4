CREATE INDEX "authorizations_updated_at_idx" ON "authorizations" USING btree ("updated_at");--> statement-breakpoint
CREATE INDEX "cards_updated_at_idx" ON "cards" USING btree ("updated_at");--> statement-breakpoint
CREATE INDEX "chain_events_created_at_idx" ON "chain_events" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "credit_accounts_updated_at_idx" ON "credit_accounts" USING btree ("updated_at");--> statement-breakpoint
CREATE INDEX "decisions_decided_at_idx" ON "decisions" USING btree ("decided_at");--> statement-breakpoint
CREATE INDEX "ledger_transfers_created_at_idx" ON "ledger_transfers" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "positions_updated_at_idx" ON "positions" USING btree ("updated_at");--> statement-breakpoint
CREATE INDEX "users_updated_at_idx" ON "users" USING btree ("updated_at");