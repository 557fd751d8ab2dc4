/**
 * Vitest global setup: migrates the template database once (named after a hash of the migrations,
 * so it is reused while they are unchanged and concurrent runs share it). Each test file then clones
 * it (`CREATE DATABASE … TEMPLATE …`), which takes milliseconds, instead of migrating again.
 */
import postgres from 'postgres';
import { migrateDatabase } from '../../shared/db/migrate.ts';
import { adminUrl, redisMode, TEMPLATE_DB, withDatabase } from './env.ts';
import { setUpTestRedis } from './redis-cluster.ts';

export default async function setup(): Promise<() => Promise<void>> {
  await setUpDatabaseTemplate();
  // Redis: the shared one, or with TEST_REDIS=cluster a private six-node cluster for the whole run.
  return setUpTestRedis(redisMode());
}

async function setUpDatabaseTemplate(): Promise<void> {
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
