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
-- Rows land here only if upkeep fell behind; the partition job refuses to go on while it holds rows.
CREATE TABLE "card_events_default" PARTITION OF "card_events" DEFAULT;
--> statement-breakpoint
-- Creates the monthly partitions from `from_month` for `months` months; safe to run repeatedly.
-- Returns the names of the partitions it created.
CREATE FUNCTION card_events_ensure_partitions(from_month date, months integer)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
	m date := date_trunc('month', from_month)::date;
	name text;
	i integer;
BEGIN
	IF months < 1 OR months > 120 THEN
		RAISE EXCEPTION 'months must be between 1 and 120, got %', months;
	END IF;
	FOR i IN 0 .. months - 1 LOOP
		name := format('card_events_y%sm%s', to_char(m, 'YYYY'), to_char(m, 'MM'));
		IF to_regclass(format('public.%I', name)) IS NULL THEN
			EXECUTE format(
				'CREATE TABLE %I PARTITION OF card_events FOR VALUES FROM (%L) TO (%L)',
				name, format('%s 00:00:00+00', m), format('%s 00:00:00+00', (m + interval '1 month')::date)
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
CREATE FUNCTION ledger_entries_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	bad bigint;
BEGIN
	SELECT e.transfer_id INTO bad
	FROM ledger_entries e
	WHERE e.transfer_id IN (SELECT DISTINCT transfer_id FROM new_entries)
	GROUP BY e.transfer_id
	HAVING sum(e.amount_cents) <> 0
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

-- ── audit_log: append-only and hash-chained. Inserts are serialised by a transaction-scoped advisory
-- lock, and the id is drawn after the lock, so id order is chain order even with concurrent writers.
CREATE FUNCTION audit_log_row_hash(prev_hash text, id bigint, at timestamptz, actor text, action text,
	entity_type text, entity_id text, data jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT encode(sha256(convert_to(concat_ws('|', prev_hash, id::text,
		to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), actor, action, entity_type, entity_id,
		data::text), 'UTF8')), 'hex')
$$;
--> statement-breakpoint
CREATE FUNCTION audit_log_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(7431001);
	NEW.id := nextval(pg_get_serial_sequence('audit_log', 'id'));
	NEW.prev_hash := coalesce((SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1), '');
	NEW.hash := audit_log_row_hash(NEW.prev_hash, NEW.id, NEW.at, NEW.actor, NEW.action, NEW.entity_type,
		NEW.entity_id, NEW.data);
	RETURN NEW;
END $$;
--> statement-breakpoint
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_chain();
--> statement-breakpoint
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
	FOR EACH ROW EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
--> statement-breakpoint
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
--> statement-breakpoint
-- Walks the chain in id order and returns the first broken link (no rows when the chain is intact).
CREATE FUNCTION audit_log_verify(from_id bigint DEFAULT 0)
RETURNS TABLE (broken_id bigint, problem text) LANGUAGE plpgsql STABLE AS $$
DECLARE
	r record;
	expected_prev text := NULL;
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

-- ── Roles, one per service, least privilege. Roles are cluster-wide, so creation is idempotent;
-- grants are per database. None of these roles bypasses RLS (there is none in this database: RLS
-- lives in Supabase) and none owns a table, so the triggers above bind them all.
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['credana_hot_path', 'credana_ledger_writer', 'credana_indexer',
		'credana_reconciliation', 'credana_support_ro']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS', r);
		END IF;
	END LOOP;
END $$;
--> statement-breakpoint
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO credana_hot_path, credana_ledger_writer, credana_indexer,
	credana_reconciliation, credana_support_ro;
--> statement-breakpoint
-- Hot path: reads positions and prices; its Postgres fallback makes row-locked holds.
GRANT SELECT ON users, cards, wallets, assets, prices, positions, credit_accounts, authorizations, decisions
	TO credana_hot_path;
--> statement-breakpoint
GRANT INSERT, UPDATE ON authorizations, credit_accounts TO credana_hot_path;
--> statement-breakpoint
GRANT INSERT ON decisions, ledger_transfers, ledger_entries, audit_log TO credana_hot_path;
--> statement-breakpoint
-- Ledger writer: applies the outbox and Stripe's events.
GRANT SELECT ON users, cards, assets, prices, positions, credit_accounts, authorizations, decisions,
	ledger_transfers, ledger_entries, card_events TO credana_ledger_writer;
--> statement-breakpoint
GRANT INSERT, UPDATE ON authorizations, credit_accounts TO credana_ledger_writer;
--> statement-breakpoint
GRANT INSERT ON decisions, card_events, ledger_transfers, ledger_entries, audit_log TO credana_ledger_writer;
--> statement-breakpoint
-- Indexer: chain events, blocks, cursors, positions, prices; on-chain debt; wallet links.
GRANT SELECT ON users, wallets, assets, prices, positions, credit_accounts, chain_events, chain_blocks,
	indexer_cursors, ledger_transfers TO credana_indexer;
--> statement-breakpoint
GRANT INSERT, UPDATE, DELETE ON chain_events, chain_blocks, indexer_cursors, positions TO credana_indexer;
--> statement-breakpoint
GRANT INSERT ON prices, wallets, ledger_transfers, ledger_entries, audit_log TO credana_indexer;
--> statement-breakpoint
GRANT UPDATE ON credit_accounts TO credana_indexer;
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
