-- One answer per request (docs/chaos.md, bug 3): when the Postgres fallback decided a replay of a request
-- Redis had already answered, the ledger writer replaces the fallback's decision row by Redis's (the
-- answer Redis keeps and Stripe acted on), hot-path/ledger-writer/apply.ts supersedeFallbackDecisions.
-- Only the outcome columns; event, authorization, user, card and amount requested stay as inserted.
GRANT UPDATE (id, approved, approved_cents, reason, source, latency_us, decided_at) ON decisions TO credana_ledger_writer;
