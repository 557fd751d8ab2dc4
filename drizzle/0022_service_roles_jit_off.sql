-- No JIT compilation for the services' own roles. Their statements are small, indexed, per-user reads and
-- writes, but the planner's cost estimate decides JIT, and a stale or pessimistic estimate (a per-row
-- subquery estimated at 561 rows instead of 1) put the account rebuild's authorization-state statement
-- (shared/db/queries/authorizations.ts) above jit_above_cost: 98 functions compiled, 810 ms per rebuild
-- instead of 5.9 ms (EXPLAIN ANALYZE on the bench database's 160,000 authorizations, same statement, same
-- session). A rebuild runs in the decision budget, and after a Redis loss every user's first swipe
-- rebuilds: 1,000 at once saturated Postgres (`npm run bench`, cluster phase: 24 decisions/s). Set per
-- role, as 0009 sets statement_timeout, so it holds through PgBouncer too. Reconciliation and analytics
-- keep JIT (their statements read every user's books).
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['credana_hot_path', 'credana_ledger_writer', 'credana_indexer',
		'credana_settlement', 'credana_liquidator', 'credana_withdrawals', 'credana_supabase_sync']
	LOOP
		EXECUTE format('ALTER ROLE %I SET jit = off', r);
	END LOOP;
END $$;
