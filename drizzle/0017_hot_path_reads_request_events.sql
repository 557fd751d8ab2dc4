-- The hot path adopts fallback grants (hot-path/decision/redis-lease.ts) and reads, for each, the request
-- count of the request event the fallback stored beside it (card_events.payload's request_history), to
-- tell whether Stripe's events have already settled the grant. It had INSERT on card_events only, so
-- as its own role the adoption query failed (permission denied) and no grant was ever adopted: found
-- when the suite first ran the hot path as credana_hot_path after the adoption fix. Read access to the
-- two columns it joins; the payloads are the events Stripe sent to this same process (cardholder
-- details stripped, 0014), and row security already gives it every row (0012).
GRANT SELECT (id, payload) ON card_events TO credana_hot_path;
