-- Row-level security on the financial tables (docs/operations.md "Database roles and row security").
--
-- Until now every grant was whole-table and no table had RLS: a role that could read `authorizations`
-- read every user's. From here:
-- * Every table that holds one user's rows has RLS on. A role with a grant on it and no policy reads
--   nothing and writes nothing, so each role gets its policies explicitly below.
-- * The services that act on any user (hot path, ledger writer, indexer, settlement, liquidator,
--   withdrawals) keep every row of the tables they were granted: their policy is `USING (true)`. Their
--   grants, not the policy, decide what they may do.
-- * The roles that read across users get what their job needs and no more:
--   - credana_reconciliation: every row and column (it verifies and repairs everyone's books, the audit
--     chain, wallets against the chain, card events against Stripe) — read-mostly, writes as before.
--   - credana_support_ro: one user at a time, only after `support_open_user(user, reason)` recorded who
--     asked for whom and why (audit_log + support_access); columns without operators' freeze reasons,
--     merchant names or decision internals.
--   - credana_supabase_sync: every user (every financial user is created by the bridge from a Supabase
--     account), but not the operators' freeze reasons; it never had wallets, card events or audit rows.
--   - credana_analytics (new): every row, pseudonymous columns only: user ids and amounts, never wallet
--     addresses, merchant names, card events' payloads (cardholder details) or audit rows.
-- * RLS is not FORCEd: the table owner runs the SECURITY DEFINER functions that must see every row (the
--   ledger balance check, the audit chain, the summary refresh), and an owner could turn FORCE off again
--   anyway. What keeps the owner's bypass away from the services is that none of them owns a table and
--   none has BYPASSRLS (test/row-security.test.ts checks both).

-- ── The analytics role: ingestion into the analytics store reads as this role (scripts/analytics).
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'credana_analytics') THEN
		CREATE ROLE credana_analytics LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
	END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
	NULL; -- created concurrently by a migration of another database
END $$;
--> statement-breakpoint
-- Ingestion statements are long batches on the replica (scripts/analytics/limits.ts).
ALTER ROLE credana_analytics SET statement_timeout = '600s';
--> statement-breakpoint
ALTER ROLE credana_analytics SET idle_in_transaction_session_timeout = '60s';
--> statement-breakpoint
-- The analytics job runs inside the reconciliation scheduler, connected as credana_reconciliation, and
-- reads after `SET ROLE credana_analytics` (scripts/analytics/read-as.ts), so its reads are held to this
-- role's columns whether the replica or the primary answers. NOINHERIT: reconciliation may become
-- credana_analytics but does not carry its privileges or policies otherwise (it has no other membership;
-- it needs none, its own grants are a superset).
GRANT credana_analytics TO credana_reconciliation;
--> statement-breakpoint
ALTER ROLE credana_reconciliation NOINHERIT;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO credana_analytics;
--> statement-breakpoint
-- What ingestion reads of a Stripe event: its time and merchant category, never the payload (Stripe's
-- issuing objects embed the cardholder: name, email, phone, billing address). A plain view, run with its
-- owner's rights, so it needs no policy on card_events.
CREATE VIEW card_event_facts AS
SELECT
	ce.id,
	ce.type,
	ce.object_id,
	ce.created_at,
	(ce.payload->'data'->'object'->>'created')::bigint AS object_created_s,
	ce.payload->'data'->'object'->'merchant_data'->>'category_code' AS merchant_category_code
FROM card_events ce;
--> statement-breakpoint
REVOKE ALL ON card_event_facts FROM PUBLIC;
--> statement-breakpoint
GRANT SELECT ON card_event_facts TO credana_analytics;
--> statement-breakpoint
GRANT SELECT ON assets, prices TO credana_analytics;
--> statement-breakpoint
GRANT SELECT (id, status, credit_limit_cents, created_at) ON users TO credana_analytics;
--> statement-breakpoint
GRANT SELECT (user_id, debt_onchain_usdc, unsettled_cents, holds_cents, updated_at) ON credit_accounts
	TO credana_analytics;
--> statement-breakpoint
GRANT SELECT (user_id, asset_id, collateral_base, pending_withdrawal_base, updated_at) ON positions
	TO credana_analytics;
--> statement-breakpoint
GRANT SELECT (id, user_id, status, approved, requested_cents, approved_cents, held_cents, captured_cents,
	decision, decline_reason, merchant_category_code, expires_at, created_at) ON authorizations TO credana_analytics;
--> statement-breakpoint
GRANT SELECT (id, user_id, approved, requested_cents, approved_cents, reason, source, latency_us, decided_at)
	ON decisions TO credana_analytics;
--> statement-breakpoint
GRANT SELECT (id, ref, kind, user_id, authorization_id, created_at) ON ledger_transfers TO credana_analytics;
--> statement-breakpoint
GRANT SELECT (id, transfer_id, account, user_id, amount_cents, created_at) ON ledger_entries TO credana_analytics;
--> statement-breakpoint

-- ── Support: one user at a time, on record. A support session asks for a user with a reason; the
-- function records it (support_access and audit_log) and hands the session a random nonce in a session
-- setting. support_subject() answers the user only while the setting's nonce matches a live record of
-- this very backend: a setting is open to anyone to set (custom settings are), so it is never trusted on
-- its own, and a nonce is useless in another session (another backend pid) and after it expires.
CREATE TABLE support_access (
	id bigserial PRIMARY KEY,
	backend_pid integer NOT NULL,
	nonce uuid NOT NULL,
	user_id uuid NOT NULL REFERENCES users (id),
	actor text NOT NULL,
	reason text NOT NULL,
	opened_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NOT NULL,
	CONSTRAINT support_access_reason_length CHECK (char_length(reason) BETWEEN 3 AND 500)
);
--> statement-breakpoint
CREATE INDEX support_access_backend_idx ON support_access (backend_pid, nonce);
--> statement-breakpoint
-- Nobody but the owner reads or writes it directly; support_open_user() writes it as the owner.
REVOKE ALL ON support_access FROM PUBLIC;
--> statement-breakpoint
-- Opens one user to this session for 30 minutes (a phone call, a ticket), replacing any user opened
-- before. Unknown users are refused, so a typo is not an empty answer that looks like "no activity".
CREATE FUNCTION support_open_user(target uuid, reason text) RETURNS timestamptz LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
	n uuid := gen_random_uuid();
	until timestamptz := now() + interval '30 minutes';
BEGIN
	IF reason IS NULL OR char_length(btrim(reason)) NOT BETWEEN 3 AND 500 THEN
		RAISE EXCEPTION 'a reason of 3 to 500 characters is required' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF target IS NULL OR NOT EXISTS (SELECT 1 FROM public.users u WHERE u.id = target) THEN
		RAISE EXCEPTION 'no such user' USING ERRCODE = 'no_data_found';
	END IF;
	INSERT INTO public.support_access (backend_pid, nonce, user_id, actor, reason, expires_at)
		VALUES (pg_backend_pid(), n, target, session_user, btrim(reason), until);
	INSERT INTO public.audit_log (actor, action, entity_type, entity_id, data)
		VALUES ('support:' || session_user, 'support.user_opened', 'user', target::text,
			jsonb_build_object('reason', btrim(reason), 'expiresAt', until));
	PERFORM set_config('credana.support_nonce', n::text, false);
	RETURN until;
END $$;
--> statement-breakpoint
-- Closes the user opened in this session (the record stays).
CREATE FUNCTION support_close_user() RETURNS void LANGUAGE sql AS $$
	SELECT set_config('credana.support_nonce', '', false);
$$;
--> statement-breakpoint
-- The user this session may see, or NULL. Every support policy compares against it once per statement
-- (written `(SELECT support_subject())`, an initplan, not a call per row).
CREATE FUNCTION support_subject() RETURNS uuid LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
	setting text := current_setting('credana.support_nonce', true);
	subject uuid;
BEGIN
	IF setting IS NULL OR setting !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
		RETURN NULL;
	END IF;
	SELECT a.user_id INTO subject FROM public.support_access a
		WHERE a.backend_pid = pg_backend_pid() AND a.nonce = setting::uuid AND a.expires_at > now()
		ORDER BY a.id DESC LIMIT 1;
	RETURN subject;
END $$;
--> statement-breakpoint
REVOKE EXECUTE ON FUNCTION support_open_user(uuid, text), support_close_user(), support_subject() FROM PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION support_open_user(uuid, text), support_close_user(), support_subject()
	TO credana_support_ro;
--> statement-breakpoint
-- Whole-table grants become column grants. Hidden from support: the operators' freeze reason and who
-- froze (a fraud or AML freeze must not be told to the cardholder on the phone; escalations go to an
-- operator), merchant names (purchase history; being sealed) and the decision's internals.
REVOKE SELECT ON users, cards, authorizations, user_position_summary FROM credana_support_ro;
--> statement-breakpoint
GRANT SELECT (id, status, credit_limit_cents, daily_limit_cents, daily_limit_pending_cents, daily_limit_pending_at,
	daily_limit_ceiling_cents, blocked_mccs, created_at, updated_at) ON users TO credana_support_ro;
--> statement-breakpoint
GRANT SELECT (id, user_id, status, frozen, ops_frozen, ops_frozen_at, last4, created_at, updated_at) ON cards
	TO credana_support_ro;
--> statement-breakpoint
GRANT SELECT (id, user_id, card_id, status, approved, requested_cents, approved_cents, held_cents, captured_cents,
	decision, decline_reason, merchant_category_code, expires_at, created_at, updated_at) ON authorizations
	TO credana_support_ro;
--> statement-breakpoint
-- A materialized view cannot have RLS: support reads the summary through this filtered view instead.
CREATE VIEW support_user_position_summary WITH (security_barrier) AS
SELECT s.* FROM user_position_summary s WHERE s.user_id = (SELECT support_subject());
--> statement-breakpoint
REVOKE ALL ON support_user_position_summary FROM PUBLIC;
--> statement-breakpoint
GRANT SELECT ON support_user_position_summary TO credana_support_ro;
--> statement-breakpoint

-- ── Supabase projection: not the operators' freeze reason, who froze, or the card's digits.
REVOKE SELECT ON cards FROM credana_supabase_sync;
--> statement-breakpoint
GRANT SELECT (id, user_id, status, frozen, ops_frozen, created_at, updated_at) ON cards TO credana_supabase_sync;
--> statement-breakpoint

-- ── RLS on every table holding users' rows. Global tables (assets, prices, chain_blocks,
-- indexer_cursors, reconciliation_runs, redis_deciders, audit_log_head, data_keys) keep grants only.
-- Except chain_events: the indexer writes it with COPY, which PostgreSQL refuses on a table with row
-- security ("COPY FROM not supported with row-level security"); every role granted it (indexer,
-- reconciliation, Supabase sync) would see every row anyway, and neither support nor analytics holds
-- any privilege on it (test/row-security.test.ts checks both).
DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['users', 'cards', 'wallets', 'positions', 'credit_accounts', 'authorizations',
		'decisions', 'fallback_decisions', 'card_events', 'ledger_transfers', 'ledger_entries',
		'settlements', 'chain_refunds', 'withdrawal_approvals', 'liquidations', 'audit_log', 'support_access']
	LOOP
		EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
	END LOOP;
END $$;
--> statement-breakpoint
-- Every row for the roles whose job spans all users, on exactly the tables they hold a grant on (a
-- table-wide or a column grant): the grant decides what they may do, the policy only that no row is
-- hidden from them. Spelled out per table and role by the loop so that the list stays the grants' list;
-- test/row-security.test.ts pins the resulting policies, so a change shows there.
DO $$
DECLARE
	t text;
	r text;
BEGIN
	FOREACH t IN ARRAY ARRAY['users', 'cards', 'wallets', 'positions', 'credit_accounts', 'authorizations',
		'decisions', 'fallback_decisions', 'card_events', 'ledger_transfers', 'ledger_entries',
		'settlements', 'chain_refunds', 'withdrawal_approvals', 'liquidations', 'audit_log']
	LOOP
		FOREACH r IN ARRAY ARRAY['credana_hot_path', 'credana_ledger_writer', 'credana_indexer',
			'credana_settlement', 'credana_liquidator', 'credana_withdrawals', 'credana_reconciliation',
			'credana_supabase_sync', 'credana_analytics']
		LOOP
			IF has_any_column_privilege(r, format('public.%I', t), 'SELECT, INSERT, UPDATE')
				OR has_table_privilege(r, format('public.%I', t), 'DELETE') THEN
				EXECUTE format('CREATE POLICY %I ON public.%I TO %I USING (true) WITH CHECK (true)',
					t || '_' || r, t, r);
			END IF;
		END LOOP;
	END LOOP;
END $$;
--> statement-breakpoint
-- Support: the opened user's rows only, read-only (its grants are SELECT only; FOR SELECT says so twice).
CREATE POLICY users_credana_support_ro ON users FOR SELECT TO credana_support_ro
	USING (id = (SELECT support_subject()));
--> statement-breakpoint
CREATE POLICY cards_credana_support_ro ON cards FOR SELECT TO credana_support_ro
	USING (user_id = (SELECT support_subject()));
--> statement-breakpoint
CREATE POLICY authorizations_credana_support_ro ON authorizations FOR SELECT TO credana_support_ro
	USING (user_id = (SELECT support_subject()));
