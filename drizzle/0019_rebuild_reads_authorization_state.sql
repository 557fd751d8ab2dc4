-- Rebuilding a user's cached account (shared/redis/account.ts accountFromPostgres) now also restores the
-- lifecycle script's per-authorization state (captured, refunded, held for review, terminal, decided
-- requests: shared/db/queries/authorizations.ts authorizationStates), read from authorizations, decisions
-- and the ledger's lifecycle transfers with their entries, in one statement (docs/chaos.md item 11:
-- without it a `closed` after an empty restart kept the captured amount held). Every role that rebuilds
-- accounts must read them: the hot path could not read ledger_entries (it inserts them only), the
-- withdrawal approver could not read ledger_transfers nor decisions. Only the columns the query reads,
-- and, as 0012 does for every role whose job spans all users, a policy that hides no row where the role
-- had none (the hot path has one on ledger_entries already).
GRANT SELECT (transfer_id, account, amount_cents) ON ledger_entries TO credana_hot_path;
--> statement-breakpoint
GRANT SELECT (id, ref, kind, user_id, authorization_id) ON ledger_transfers TO credana_withdrawals;
--> statement-breakpoint
GRANT SELECT (authorization_id) ON decisions TO credana_withdrawals;
--> statement-breakpoint
CREATE POLICY ledger_transfers_credana_withdrawals ON ledger_transfers TO credana_withdrawals USING (true) WITH CHECK (true);
--> statement-breakpoint
CREATE POLICY decisions_credana_withdrawals ON decisions TO credana_withdrawals USING (true) WITH CHECK (true);
