-- Rebuilding a user's cached account (shared/redis/account.ts accountFromPostgres) now also restores the
-- lifecycle script's per-authorization state (captured, refunded, held for review, terminal, decided
-- requests, the captures a `closed` event listed: shared/db/queries/authorizations.ts
-- authorizationStates), read from authorizations, decisions, the ledger's lifecycle transfers with their
-- entries and the authorization's stored `closed` event, in one statement (docs/chaos.md item 11: without
-- it a `closed` after an empty restart kept the captured amount held). Every role that rebuilds accounts
-- must read them: the hot path could not read ledger_entries (it inserts them only) nor card_events'
-- object, type and time (it reads id and payload, 0017); the withdrawal approver could not read
-- ledger_transfers, decisions nor card_events (the payloads it now reads are the Issuing events, with
-- cardholder details stripped, 0014). Only the columns the query reads, and, as 0012 does for every role
-- whose job spans all users, a policy that hides no row where the role had none (the hot path has them).
GRANT SELECT (transfer_id, account, amount_cents) ON ledger_entries TO credana_hot_path;
--> statement-breakpoint
GRANT SELECT (id, ref, kind, user_id, authorization_id) ON ledger_transfers TO credana_withdrawals;
--> statement-breakpoint
GRANT SELECT (authorization_id) ON decisions TO credana_withdrawals;
--> statement-breakpoint
CREATE POLICY ledger_transfers_credana_withdrawals ON ledger_transfers TO credana_withdrawals USING (true) WITH CHECK (true);
--> statement-breakpoint
CREATE POLICY decisions_credana_withdrawals ON decisions TO credana_withdrawals USING (true) WITH CHECK (true);
--> statement-breakpoint
GRANT SELECT (object_id, type, created_at) ON card_events TO credana_hot_path;
--> statement-breakpoint
GRANT SELECT (id, object_id, type, payload, created_at) ON card_events TO credana_withdrawals;
--> statement-breakpoint
CREATE POLICY card_events_credana_withdrawals ON card_events TO credana_withdrawals USING (true) WITH CHECK (true);
