#!/bin/bash
# The streaming replica: on first start, clone the primary with pg_basebackup (-R writes
# standby.signal and primary_conninfo), then run as a hot standby. Read-only: reports
# (`npm run report` with ANALYTICS_DATABASE_URL pointing here) and read-only checks, never writes.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h postgres-primary -p 5432 -q; do sleep 1; done
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h postgres-primary -p 5432 -U replicator \
    -D "$PGDATA" -R -X stream -c fast
  chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on
