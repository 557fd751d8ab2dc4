-- Partition upkeep runs on the scheduler (scripts/upkeep/partitions.ts) as credana_reconciliation,
-- which neither owns card_events nor should: creating a partition needs the owner's rights, so the
-- partition function runs as its owner (SECURITY DEFINER, with the fixed search_path it already has;
-- it builds names and bounds only from dates, never from text it is given) and reconciliation may call
-- it. The status function lets the same role watch the default partition and the months covered
-- without a grant on every partition.
ALTER FUNCTION card_events_ensure_partitions(date, integer) SECURITY DEFINER;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION card_events_ensure_partitions(date, integer) TO credana_reconciliation;
--> statement-breakpoint
-- Rows in the default partition (0 unless upkeep fell behind), and the first day of every monthly
-- partition that exists.
CREATE FUNCTION card_events_partition_status(OUT default_rows bigint, OUT months date[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
	SELECT
		(SELECT count(*) FROM public.card_events_default),
		coalesce((
			SELECT array_agg(to_date(substr(c.relname, 14), 'YYYY"m"MM') ORDER BY c.relname)
			FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'public.card_events'::regclass AND c.relname ~ '^card_events_y[0-9]{4}m[0-9]{2}$'
		), '{}')
$$;
--> statement-breakpoint
REVOKE EXECUTE ON FUNCTION card_events_partition_status() FROM PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION card_events_partition_status() TO credana_reconciliation;
