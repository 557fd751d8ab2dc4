-- Cardholder PII is not stored in card_events (issue 18, docs/operations.md "Encryption at rest").
-- Stripe's issuing objects embed the cardholder: an authorization's `card.cardholder`, a card's
-- `cardholder` and `shipping`, a cardholder event's own object, and the same fields in
-- `data.previous_attributes` of an *.updated event. Their name, email, phone number, billing address,
-- individual (names, date of birth, verification) and company details are removed before a row is
-- stored, by a trigger, so every writer (the ledger writer, the hot path's fallback, a replay, a hand
-- insert) is covered. What the jobs read from the JSON stays: `data.object.created` (Stripe
-- reconciliation, analytics), `merchant_data` (analytics' category), ids, amounts, statuses, last4.
CREATE FUNCTION card_event_strip(event jsonb, path text[], keys text[]) RETURNS jsonb
	LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT CASE WHEN jsonb_typeof(event #> path) = 'object' AND (event #> path) ?| keys
		THEN jsonb_set(event, path, (event #> path) - keys) ELSE event END
$$;
--> statement-breakpoint
CREATE FUNCTION card_event_redact(event jsonb) RETURNS jsonb
	LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
	holder CONSTANT text[] := '{name,email,phone_number,billing,individual,company}';
	part text;
BEGIN
	IF jsonb_typeof(event -> 'data') IS DISTINCT FROM 'object' THEN
		RETURN event;
	END IF;
	FOREACH part IN ARRAY ARRAY['object', 'previous_attributes'] LOOP
		IF event #>> '{data,object,object}' = 'issuing.cardholder' THEN
			event := public.card_event_strip(event, ARRAY['data', part], holder);
		END IF;
		-- A card's cardholder (issuing_card.* events), and an authorization's card's cardholder.
		event := public.card_event_strip(event, ARRAY['data', part, 'cardholder'], holder);
		event := public.card_event_strip(event, ARRAY['data', part, 'card', 'cardholder'], holder);
		-- Where the card is shipped: name, address, phone.
		event := public.card_event_strip(event, ARRAY['data', part], '{shipping}');
		event := public.card_event_strip(event, ARRAY['data', part, 'card'], '{shipping}');
		-- Fleet cards: what the driver typed at the pump (driver id, user id).
		event := public.card_event_strip(event, ARRAY['data', part, 'fleet'], '{cardholder_prompt_data}');
	END LOOP;
	RETURN event;
END
$$;
--> statement-breakpoint
CREATE FUNCTION card_events_redact_pii() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.payload := public.card_event_redact(NEW.payload);
	RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER card_events_redact_pii BEFORE INSERT ON card_events
	FOR EACH ROW EXECUTE FUNCTION card_events_redact_pii();
--> statement-breakpoint
-- The events already stored.
UPDATE card_events SET payload = card_event_redact(payload) WHERE payload IS DISTINCT FROM card_event_redact(payload);
