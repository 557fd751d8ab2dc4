/**
 * Vitest global setup: migrates one template database per run. Each test file then clones it
 * (`CREATE DATABASE … TEMPLATE …`), which takes milliseconds, instead of migrating again.
 */
import postgres from 'postgres';
import { ensureDatabase, migrateDatabase } from '../../shared/db/migrate.ts';
import { adminUrl, TEMPLATE_DB, withDatabase } from './env.ts';

export default async function setup(): Promise<() => Promise<void>> {
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  try {
    // A template cannot be dropped while marked as one; unmark, drop, rebuild (migrations may have changed).
    await admin.unsafe(`update pg_database set datistemplate = false where datname = '${TEMPLATE_DB}'`);
    await admin.unsafe(`drop database if exists "${TEMPLATE_DB}" with (force)`);
    // Leftover per-file databases of killed runs.
    const stale = await admin<
      { datname: string }[]
    >`select datname from pg_database where datname like 'credana_t_%'`;
    for (const { datname } of stale) await admin.unsafe(`drop database if exists "${datname}" with (force)`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  const url = withDatabase(TEMPLATE_DB);
  await ensureDatabase(url);
  await migrateDatabase(url);
  const mark = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  await mark.unsafe(`update pg_database set datistemplate = true where datname = '${TEMPLATE_DB}'`);
  await mark.end({ timeout: 5 });
  return async () => {};
}
