#!/bin/bash
# Runs once, when the primary's data directory is created (the postgres image's
# /docker-entrypoint-initdb.d): a replication role for the streaming replica, allowed from the
# compose network only by password.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -v password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
