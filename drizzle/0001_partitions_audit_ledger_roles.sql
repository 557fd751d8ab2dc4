-- Custom SQL that drizzle-kit cannot express: the partitioned card_events table and its upkeep,
-- the balanced-ledger rule, the append-only hash-chained audit log, the summary materialized view,
-- and one least-privilege role per service.

-- ── card_events: every Stripe event as received, partitioned by month on the event's own `created`.
-- A unique constraint on a partitioned table must include the partition key, so it is (id, created_at).
-- Stripe's `created` never changes for an event id, so the pair is unique exactly when the id is.
CREATE TABLE "card_events" (
	"id" text NOT NULL,
	"type" text NOT NULL,
	"user_id" uuid,
	"object_id" text,
	"payload" jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "card_events_pkey" PRIMARY KEY ("id", "created_at")
) PARTITION BY RANGE ("created_at");
--> statement-breakpoint
CREATE INDEX "card_events_user_created_idx" ON "card_events" ("user_id", "created_at" DESC);
--> statement-breakpoint
CREATE INDEX "card_events_object_idx" ON "card_events" ("object_id");
--> statement-breakpoint
-- Rows land here only if upkeep fell behind; the partition job (db:partitions) fails loudly while it
-- holds rows, because the partition for their month can no longer be created.
CREATE TABLE "card_events_default" PARTITION OF "card_events" DEFAULT;
--> statement-breakpoint
-- Creates the monthly partitions from `from_month` for `months` months; safe to run repeatedly, and
-- concurrently: a transaction-scoped advisory lock makes a second caller wait and then find the
-- partitions made. Returns the names of the partitions it created. Bounds are written with to_char,
-- not the session's DateStyle, and in UTC, so every session cuts months at the same instant.
CREATE FUNCTION card_events_ensure_partitions(from_month date, months integer)
RETURNS SETOF text LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
	-- timestamp without time zone: truncating never depends on the session's zone or its DST gaps.
	m date := date_trunc('month', from_month::timestamp)::date;
	name text;
	i integer;
BEGIN
	IF months IS NULL OR months < 1 OR months > 120 THEN
		RAISE EXCEPTION 'months must be between 1 and 120, got %', months;
	END IF;
	PERFORM pg_advisory_xact_lock(7431002);
	FOR i IN 0 .. months - 1 LOOP
		name := format('card_events_y%sm%s', to_char(m, 'YYYY'), to_char(m, 'MM'));
		IF to_regclass(format('public.%I', name)) IS NULL THEN
			EXECUTE format(
				'CREATE TABLE public.%I PARTITION OF public.card_events FOR VALUES FROM (%L) TO (%L)',
				name,
				to_char(m, 'YYYY-MM-DD') || ' 00:00:00+00',
				to_char((m + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00'
			);
			RETURN NEXT name;
		END IF;
		m := (m + interval '1 month')::date;
	END LOOP;
END $$;
--> statement-breakpoint
SELECT card_events_ensure_partitions((now() AT TIME ZONE 'UTC' - interval '1 month')::date, 5);
--> statement-breakpoint

-- ── Ledger: every transfer's entries sum to zero, checked per statement over the whole transfer
-- (all entries of a transfer are inserted in one statement). Entries and transfers are append-only.
-- SECURITY DEFINER: the check reads every entry of the transfer, and a service may insert entries
-- without being granted SELECT on them (the hot path); as an invoker function its inserts would fail
-- with permission denied.
CREATE FUNCTION ledger_entries_check_balanced() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
	bad bigint;
BEGIN
	-- One index lookup per transfer of the statement: a join here was planned as a merge join that
	-- read ledger_entries_transfer_idx from its start, a cost that grew with the whole ledger.
	SELECT t.transfer_id INTO bad
	FROM (SELECT DISTINCT transfer_id FROM new_entries) t
	WHERE (SELECT sum(e.amount_cents) FROM ledger_entries e WHERE e.transfer_id = t.transfer_id) <> 0
	LIMIT 1;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'ledger transfer % is unbalanced: its entries do not sum to zero', bad
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
	REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_check_balanced();
--> statement-breakpoint
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
--> statement-breakpoint
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
	FOR EACH ROW EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
	FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_transfers_append_only BEFORE UPDATE OR DELETE ON ledger_transfers
	FOR EACH ROW EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
CREATE TRIGGER ledger_transfers_no_truncate BEFORE TRUNCATE ON ledger_transfers
	FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
--> statement-breakpoint

-- ── audit_log: append-only and hash-chained. `audit_log_head` holds the newest link. Every INSERT
-- statement locks that one row before its first row (BEFORE STATEMENT), each row draws its id under
-- the lock and chains onto the previous row's hash, and the statement moves the head once at its end
-- (AFTER STATEMENT), so id order is chain order even with concurrent writers, and a batch costs one head
-- update instead of one per row. The lock is held to the end of the transaction. Under READ COMMITTED a
-- waiting writer re-reads the head its predecessor left; under REPEATABLE READ or SERIALIZABLE it gets
-- serialization_failure (40001) and must retry, instead of chaining onto a stale row and forking the
-- chain. The head also lets audit_log_verify() notice rows cut off the end of the log, which a walk of
-- the rows alone cannot see.
CREATE TABLE audit_log_head (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	last_id bigint NOT NULL,
	last_hash text NOT NULL
);
--> statement-breakpoint
INSERT INTO audit_log_head (singleton, last_id, last_hash) VALUES (true, 0, '');
--> statement-breakpoint
CREATE TRIGGER audit_log_head_no_delete BEFORE DELETE ON audit_log_head
	FOR EACH ROW EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
CREATE TRIGGER audit_log_head_no_truncate BEFORE TRUNCATE ON audit_log_head
	FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
-- The hashed text is a JSON array, so no field's content can pose as a field boundary (a '|'-joined
-- text would hash actor 'a|b', action 'c' the same as actor 'a', action 'b|c'). STABLE, not
-- IMMUTABLE: to_char is only stable.
CREATE FUNCTION audit_log_row_hash(prev_hash text, id bigint, at timestamptz, actor text, action text,
	entity_type text, entity_id text, data jsonb)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
	SELECT encode(sha256(convert_to(jsonb_build_array(prev_hash, id,
		to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), actor, action, entity_type, entity_id,
		data)::text, 'UTF8')), 'hex')
$$;
--> statement-breakpoint
-- The running hash of the statement in progress lives in a transaction-local setting between rows. A
-- writer can set that setting too (custom settings are open to everyone), even between the rows of its
-- own INSERT, so it is never trusted on its own: the AFTER STATEMENT trigger checks the statement's rows
-- against the head and each other before moving the head, and refuses the statement otherwise.
-- SECURITY DEFINER: writers hold INSERT on audit_log only; the chain needs the head and the sequence.
CREATE FUNCTION audit_log_chain_begin() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
	prev text;
BEGIN
	SELECT last_hash INTO STRICT prev FROM audit_log_head WHERE singleton FOR UPDATE;
	PERFORM set_config('credana.audit_log_prev_hash', prev, true);
	RETURN NULL;
END $$;
--> statement-breakpoint
-- Per row: no head access, no SET clause of its own and the hash expression written out, because
-- this runs once per audited operation. It must compute exactly audit_log_row_hash(); the
-- tests recompute every hash with that function through audit_log_verify().
CREATE FUNCTION audit_log_chain() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
	NEW.id := nextval('public.audit_log_id_seq'::regclass);
	NEW.prev_hash := current_setting('credana.audit_log_prev_hash');
	NEW.hash := encode(sha256(convert_to(jsonb_build_array(NEW.prev_hash, NEW.id,
		to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), NEW.actor, NEW.action, NEW.entity_type,
		NEW.entity_id, NEW.data)::text, 'UTF8')), 'hex');
	PERFORM set_config('credana.audit_log_prev_hash', NEW.hash, true);
	RETURN NEW;
END $$;
--> statement-breakpoint
-- It is an invariant that after every INSERT statement the statement's rows are one unbroken run of
-- ids (no other row between them), the first links to the head as it stood, each next one links to
-- the one before, and the head names the last. Anything else (the setting tampered with mid-statement,
-- an INSERT into audit_log nested inside another) fails the statement.
CREATE FUNCTION audit_log_chain_end() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
	head record;
	run record;
	bad bigint;
BEGIN
	SELECT min(r.id) AS first_id, max(r.id) AS last_id, count(*) AS n INTO STRICT run FROM new_rows r;
	IF run.n = 0 THEN
		RETURN NULL;
	END IF;
	SELECT h.last_id, h.last_hash INTO STRICT head FROM audit_log_head h WHERE h.singleton FOR UPDATE;
	SELECT r.id INTO bad FROM (
		SELECT n.id, n.prev_hash, lag(n.hash, 1, head.last_hash) OVER (ORDER BY n.id) AS expected_prev
		FROM new_rows n
	) r WHERE r.prev_hash IS DISTINCT FROM r.expected_prev ORDER BY r.id LIMIT 1;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'audit_log row % does not continue the chain', bad
			USING ERRCODE = 'integrity_constraint_violation';
	END IF;
	IF (SELECT count(*) FROM audit_log a WHERE a.id BETWEEN run.first_id AND run.last_id) <> run.n THEN
		RAISE EXCEPTION 'audit_log rows % to % are interleaved with other rows', run.first_id, run.last_id
			USING ERRCODE = 'integrity_constraint_violation';
	END IF;
	UPDATE audit_log_head h SET last_id = r.id, last_hash = r.hash
		FROM new_rows r WHERE h.singleton AND r.id = run.last_id;
	RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER audit_log_chain_begin BEFORE INSERT ON audit_log FOR EACH STATEMENT
	EXECUTE FUNCTION audit_log_chain_begin();
--> statement-breakpoint
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_chain();
--> statement-breakpoint
CREATE TRIGGER audit_log_chain_end AFTER INSERT ON audit_log REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION audit_log_chain_end();
--> statement-breakpoint
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
	FOR EACH ROW EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
--> statement-breakpoint
-- Walks the chain in id order and returns the first broken link (no rows when the chain is intact),
-- then checks that the last row is the recorded head (rows removed from the end break that).
CREATE FUNCTION audit_log_verify(from_id bigint DEFAULT 0)
RETURNS TABLE (broken_id bigint, problem text) LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
	r record;
	expected_prev text := NULL;
	head record;
BEGIN
	IF from_id > 0 THEN
		SELECT hash INTO expected_prev FROM audit_log WHERE id < from_id ORDER BY id DESC LIMIT 1;
	END IF;
	FOR r IN SELECT * FROM audit_log WHERE id >= from_id ORDER BY id LOOP
		IF r.prev_hash IS DISTINCT FROM coalesce(expected_prev, '') THEN
			broken_id := r.id; problem := 'prev_hash does not match the previous row''s hash';
			RETURN NEXT; RETURN;
		END IF;
		IF r.hash IS DISTINCT FROM audit_log_row_hash(r.prev_hash, r.id, r.at, r.actor, r.action,
				r.entity_type, r.entity_id, r.data) THEN
			broken_id := r.id; problem := 'hash does not match the row''s content';
			RETURN NEXT; RETURN;
		END IF;
		expected_prev := r.hash;
	END LOOP;
	SELECT last_id, last_hash INTO head FROM audit_log_head WHERE singleton;
	IF NOT FOUND OR head.last_hash IS DISTINCT FROM
			coalesce((SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1), '') THEN
		broken_id := head.last_id; problem := 'the last row is not the chain head: rows are missing at the end';
		RETURN NEXT;
	END IF;
END $$;
--> statement-breakpoint

-- ── The per-user summary for dashboards and support; unique index so it refreshes CONCURRENTLY.
CREATE MATERIALIZED VIEW user_position_summary AS
SELECT
	u.id AS user_id,
	(SELECT count(*) FROM positions p WHERE p.user_id = u.id AND p.collateral_base > 0) AS assets_held,
	coalesce(ca.debt_onchain_usdc, 0)::text AS debt_onchain_usdc,
	coalesce(ca.unsettled_cents, 0) AS unsettled_cents,
	coalesce(ca.holds_cents, 0) AS holds_cents,
	(SELECT count(*) FROM authorizations a WHERE a.user_id = u.id AND a.held_cents > 0) AS open_authorizations,
	(SELECT max(a.created_at) FROM authorizations a WHERE a.user_id = u.id) AS last_authorization_at
FROM users u
LEFT JOIN credit_accounts ca ON ca.user_id = u.id;
--> statement-breakpoint
CREATE UNIQUE INDEX user_position_summary_user_idx ON user_position_summary (user_id);
--> statement-breakpoint
-- On PostgreSQL 15 only the owner may refresh a materialized view; the scheduled job runs as
-- credana_reconciliation and refreshes through this function instead of owning the view.
CREATE FUNCTION refresh_user_position_summary() RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
	REFRESH MATERIALIZED VIEW CONCURRENTLY public.user_position_summary;
END $$;
--> statement-breakpoint

-- ── Roles, one per service, least privilege. Roles are cluster-wide, so creation is idempotent, and
-- tolerates another database's migration creating the same role at the same moment (advisory locks
-- are per database, so migrate.ts's lock does not serialise two databases); grants are per database.
-- None of these roles bypasses RLS (there is none in this database: RLS lives in Supabase) and none
-- owns a table, so the triggers above bind them all.
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['credana_hot_path', 'credana_ledger_writer', 'credana_indexer',
		'credana_reconciliation', 'credana_support_ro']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			BEGIN
				EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS', r);
			EXCEPTION WHEN duplicate_object OR unique_violation THEN
				NULL; -- created concurrently by a migration of another database
			END;
		END IF;
	END LOOP;
END $$;
--> statement-breakpoint
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO credana_hot_path, credana_ledger_writer, credana_indexer,
	credana_reconciliation, credana_support_ro;
--> statement-breakpoint
-- Hot path: reads positions and prices; its Postgres fallback makes row-locked holds. It reads
-- ledger_transfers because writing a hold's entries needs the transfer's id (INSERT … RETURNING id needs
-- SELECT) and an idempotent retry looks its transfer up by ref.
GRANT SELECT ON users, cards, wallets, assets, prices, positions, credit_accounts, authorizations, decisions,
	ledger_transfers TO credana_hot_path;
--> statement-breakpoint
GRANT INSERT, UPDATE ON authorizations, credit_accounts TO credana_hot_path;
--> statement-breakpoint
-- card_events: the fallback stores the request event beside its decision (hot-path/decision/postgres-fallback.ts).
GRANT INSERT ON decisions, card_events, ledger_transfers, ledger_entries, audit_log TO credana_hot_path;
--> statement-breakpoint
-- Ledger writer: applies the outbox and Stripe's events.
GRANT SELECT ON users, cards, assets, prices, positions, credit_accounts, authorizations, decisions,
	ledger_transfers, ledger_entries, card_events TO credana_ledger_writer;
--> statement-breakpoint
GRANT INSERT, UPDATE ON authorizations, credit_accounts TO credana_ledger_writer;
--> statement-breakpoint
GRANT INSERT ON decisions, card_events, ledger_transfers, ledger_entries, audit_log TO credana_ledger_writer;
--> statement-breakpoint
-- Indexer: chain events, blocks, cursors, positions, prices; on-chain debt; wallet links. A reorg
-- rewrites or removes the price rounds of orphaned blocks and reads back the ledger entries it booked
-- to reverse them; it creates a user's credit account on the first on-chain event (indexer/store).
GRANT SELECT ON users, wallets, assets, prices, positions, credit_accounts, chain_events, chain_blocks,
	indexer_cursors, ledger_transfers, ledger_entries TO credana_indexer;
--> statement-breakpoint
GRANT INSERT, UPDATE, DELETE ON chain_events, chain_blocks, indexer_cursors, positions, prices TO credana_indexer;
--> statement-breakpoint
GRANT INSERT ON wallets, ledger_transfers, ledger_entries, audit_log TO credana_indexer;
--> statement-breakpoint
GRANT INSERT, UPDATE ON credit_accounts TO credana_indexer;
--> statement-breakpoint
-- Reconciliation: reads everything, repairs balances and holds, records its runs.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO credana_reconciliation;
--> statement-breakpoint
GRANT INSERT, UPDATE ON reconciliation_runs, credit_accounts, authorizations TO credana_reconciliation;
--> statement-breakpoint
GRANT INSERT ON ledger_transfers, ledger_entries, audit_log TO credana_reconciliation;
--> statement-breakpoint
-- Support (read-only): who the user is, their cards, authorizations and summary; nothing of the ledger.
GRANT SELECT ON users, cards, authorizations, user_position_summary TO credana_support_ro;
--> statement-breakpoint
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO credana_hot_path, credana_ledger_writer, credana_indexer,
	credana_reconciliation;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE ON settlements TO credana_indexer;
--> statement-breakpoint
GRANT SELECT ON settlements TO credana_ledger_writer;
--> statement-breakpoint
-- Functions are executable by PUBLIC unless revoked. Partition upkeep belongs to the table's owner
-- (the db:partitions job); verifying the audit chain and refreshing the summary to reconciliation.
REVOKE EXECUTE ON FUNCTION card_events_ensure_partitions(date, integer), audit_log_verify(bigint),
	refresh_user_position_summary() FROM PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION audit_log_verify(bigint), refresh_user_position_summary() TO credana_reconciliation;
