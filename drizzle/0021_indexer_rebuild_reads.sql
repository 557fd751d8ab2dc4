-- The indexer rebuilds a user's cached account from Postgres when a Redis write of its commit failed
-- (indexer/apply/redis.ts repair(), through shared/redis/rebuild-guard.ts and accountFromPostgres), but
-- its role could read neither cards nor authorizations (0001 grants it the chain's tables), nor what the
-- rebuild reads since 0020: the repair failed with "permission denied for table cards" — not a retryable
-- error, so it went up to the runtime's step, and the user's cached account stayed stale
-- (shared/redis/auth-state-rebuild.test.ts, "is read by every role that rebuilds accounts", now runs it
-- as credana_indexer). Only the columns the rebuild reads, and, as 0012 does for every role whose job
-- spans all users, a policy that hides no row (users, positions, credit_accounts, ledger_transfers and
-- ledger_entries have the indexer's policy from 0012 already).
GRANT SELECT (id, user_id, status, frozen, ops_frozen) ON cards TO credana_indexer;
--> statement-breakpoint
GRANT SELECT (id, user_id, status, approved, held_cents, captured_cents, approved_cents, expires_at,
	created_at, updated_at) ON authorizations TO credana_indexer;
--> statement-breakpoint
GRANT SELECT (authorization_id) ON decisions TO credana_indexer;
--> statement-breakpoint
GRANT SELECT (id, object_id, type, payload, created_at) ON card_events TO credana_indexer;
--> statement-breakpoint
CREATE POLICY cards_credana_indexer ON cards TO credana_indexer USING (true) WITH CHECK (true);
--> statement-breakpoint
CREATE POLICY authorizations_credana_indexer ON authorizations TO credana_indexer USING (true) WITH CHECK (true);
--> statement-breakpoint
CREATE POLICY decisions_credana_indexer ON decisions TO credana_indexer USING (true) WITH CHECK (true);
--> statement-breakpoint
CREATE POLICY card_events_credana_indexer ON card_events TO credana_indexer USING (true) WITH CHECK (true);
