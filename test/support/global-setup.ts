/**
 * Vitest global setup: migrates the template database once (named after a hash of the migrations,
 * so it is reused while they are unchanged and concurrent runs share it). Each test file then clones
 * it (`CREATE DATABASE … TEMPLATE …`), which takes milliseconds, instead of migrating again.
 *
 * Then, unless TEST_DATABASE_ROUTE=direct, it starts the suite's one private PgBouncer (1.18,
 * scripts/dev/pgbouncer.ts) in front of the test Postgres and publishes its port to the test files
 * (`inject('testPgBouncerPort')`): every service a test starts connects through it as its own role
 * (test/support/db.ts `urlFor`), transaction-pooled or session-pooled as production routes that role.
 * Its one wildcard database entry reaches every file's cloned database.
 */

import postgres from 'postgres';
import type { TestProject } from 'vitest/node';
import { SERVICE_ROLE_POOL_MODES, SERVICE_ROLES, startPgBouncer } from '../../scripts/dev/pgbouncer.ts';
import { testServiceUrls } from '../../shared/config.ts';
import { migrateDatabase } from '../../shared/db/migrate.ts';
import { adminUrl, redisMode, TEMPLATE_DB, withDatabase } from './env.ts';
import { freePort } from './processes.ts';
import { setUpTestRedis } from './redis-cluster.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The suite's PgBouncer, or null when TEST_DATABASE_ROUTE=direct. */
    testPgBouncerPort: number | null;
  }
}

/**
 * Server connections per (file database, role) pair. A session-pooled role holds one per client
 * connection, so this is at least a service's DATABASE_POOL_MAX (10): a smaller pool would make a
 * worker's eleventh connection wait for one of its own. Transaction-pooled roles open far fewer.
 */
const TEST_POOL_SIZE = 10;

/**
 * Migrates the template, starts the suite's PgBouncer and its Redis (the shared one, or with
 * TEST_REDIS=cluster a private six-node cluster for the whole run), and returns the teardown that stops
 * them.
 */
export default async function setup(project?: TestProject): Promise<() => Promise<void>> {
  await ensureTemplateDatabase();
  const stopRedis = await setUpTestRedis(redisMode());
  if (project === undefined) return stopRedis;
  if (testServiceUrls().databaseRoute === 'direct') {
    project.provide('testPgBouncerPort', null);
    return stopRedis;
  }
  const upstream = new URL(adminUrl());
  const pgBouncer = await startPgBouncer({
    upstreamHost: upstream.hostname,
    upstreamPort: Number(upstream.port || 5432),
    port: await freePort(),
    users: ['postgres', ...SERVICE_ROLES],
    poolMode: 'transaction',
    userPoolModes: SERVICE_ROLE_POOL_MODES,
    poolSize: TEST_POOL_SIZE,
    // A file's database is dropped when the file ends: do not keep its idle server connections open.
    serverIdleTimeoutS: 10,
  });
  project.provide('testPgBouncerPort', pgBouncer.port);
  return async () => {
    await pgBouncer.stop();
    await stopRedis();
  };
}

/** The migrated template database (also used by scripts/bench-ledger.ts). */
export async function ensureTemplateDatabase(): Promise<void> {
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  try {
    // Serialise template creation across concurrent runs.
    await admin`select pg_advisory_lock(7431002)`;
    const [existing] = await admin<
      { datistemplate: boolean }[]
    >`select datistemplate from pg_database where datname = ${TEMPLATE_DB}`;
    if (existing?.datistemplate !== true) {
      await admin.unsafe(`drop database if exists "${TEMPLATE_DB}" with (force)`);
      await admin.unsafe(`create database "${TEMPLATE_DB}"`);
      await migrateDatabase(withDatabase(TEMPLATE_DB));
      await admin.unsafe(`update pg_database set datistemplate = true where datname = '${TEMPLATE_DB}'`);
    }
    // Leftovers of killed runs: per-file databases and templates of older migrations. Without FORCE,
    // a database another run is still using is left alone; so is anything made in the last hour: a
    // concurrent run on other migrations (another branch) has its template idle between its setup and
    // its files' clones, and dropping it then failed that run.
    const stale = await admin<{ datname: string; modified_s: number | null }[]>`
      select d.datname,
        extract(epoch from (pg_stat_file('base/' || d.oid || '/PG_VERSION', true)).modification)::float8 as modified_s
      from pg_database d
      where (d.datname like 'credana\\_t\\_%' or (d.datname like 'credana\\_template\\_%' and d.datname <> ${TEMPLATE_DB}))
        and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)`;
    const hourAgoS = Date.now() / 1000 - 3_600;
    for (const { datname, modified_s: modifiedS } of stale) {
      const createdS = /^credana_t_([0-9a-z]+)_/.exec(datname)?.[1];
      if (createdS !== undefined && Number.parseInt(createdS, 36) > hourAgoS) continue;
      if (modifiedS !== null && modifiedS > hourAgoS) continue;
      try {
        await admin.unsafe(`update pg_database set datistemplate = false where datname = '${datname}'`);
        await admin.unsafe(`drop database if exists "${datname}"`);
      } catch {
        // In use after all: leave it for the next run.
      }
    }
  } finally {
    await admin`select pg_advisory_unlock(7431002)`;
    await admin.end({ timeout: 5 });
  }
}
