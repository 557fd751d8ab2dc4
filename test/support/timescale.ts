/**
 * A private PostgreSQL cluster that loads TimescaleDB, for the analytics tests and the analytics
 * benchmark. TimescaleDB is built from the team's vendored source by `npm run timescaledb:install`
 * (CI runs it); without it this fails with one line saying so — the tests that need it fail, not skip.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { type PostgresCluster, startPostgresCluster } from './processes.ts';

export const TIMESCALEDB_VERSION = '2.25.2';

/**
 * postgresql.conf settings: preload the library; no telemetry calls from tests. No job scheduler: the
 * tests and the benchmark run a policy's job themselves (`call run_job(id)`, the procedure the
 * scheduler calls) when they need it; a scheduler starting the same compression job at the same time
 * made `run_job` fail ("chunk is already compressed") — seen while writing the benchmark.
 */
export const TIMESCALEDB_SETTINGS: Readonly<Record<string, string>> = {
  shared_preload_libraries: 'timescaledb',
  'timescaledb.telemetry_level': 'off',
  'timescaledb.max_background_workers': '0',
};

/** Whether the PostgreSQL that `pg_config` names has the TimescaleDB library installed. */
export function timescaleInstalled(): boolean {
  try {
    const libdir = execFileSync('pg_config', ['--pkglibdir'], { encoding: 'utf8' }).trim();
    return existsSync(path.join(libdir, `timescaledb-${TIMESCALEDB_VERSION}.so`));
  } catch {
    return false;
  }
}

/**
 * Starts a private cluster with TimescaleDB preloaded; its `url` is the `postgres` database.
 * `extraSettings` are added to the defaults (e.g. a TimeZone other than UTC).
 */
export async function startTimescaleCluster(
  extraSettings: Readonly<Record<string, string>> = {},
): Promise<PostgresCluster> {
  if (!timescaleInstalled()) {
    throw new Error(
      `TimescaleDB ${TIMESCALEDB_VERSION} is not installed for this PostgreSQL: run \`npm run timescaledb:install\` (CI does)`,
    );
  }
  return startPostgresCluster({ settings: { ...TIMESCALEDB_SETTINGS, ...extraSettings } });
}
