-- Rebuilding a user's cached account (shared/redis/account.ts accountFromPostgres, called by
-- ensureAccount and rebuildIfWritten) now also reads the user's fallback decisions not yet adopted, in
-- the holds' statement, and stores their answers with the account (docs/chaos.md item 10: without them
-- the adoption that follows adds each of those holds a second time). Every role that rebuilds accounts
-- must read them: the hot path and reconciliation could already; the indexer (indexer/apply/redis.ts)
-- and the withdrawal approver (withdrawals/index.ts) could not, and their rebuilds failed with
-- "permission denied for table fallback_decisions" (found by the suite). Only the four columns the
-- query reads, and, as 0012 does for every role whose job spans all users, a policy that hides no row.
GRANT SELECT (user_id, event_id, stored, adopted_at) ON fallback_decisions TO credana_indexer, credana_withdrawals;
--> statement-breakpoint
CREATE POLICY fallback_decisions_credana_indexer ON fallback_decisions TO credana_indexer USING (true) WITH CHECK (true);
--> statement-breakpoint
CREATE POLICY fallback_decisions_credana_withdrawals ON fallback_decisions TO credana_withdrawals USING (true) WITH CHECK (true);
