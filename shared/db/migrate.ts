/**
 * Applies `drizzle/` to a database. Idempotent: drizzle records applied migrations in
 * `drizzle.__drizzle_migrations`, so a second run applies nothing.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';

export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../drizzle');

/** Creates the database named in `url` if it does not exist (connecting to `postgres` to do so). */
export async function ensureDatabase(url: string): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  if (!/^[a-zA-Z0-9_]{1,63}$/.test(name)) throw new Error(`database name must be [a-zA-Z0-9_]{1,63}`);
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const sql = postgres(admin.toString(), { max: 1, onnotice: () => {} });
  try {
    const rows = await sql`select 1 from pg_database where datname = ${name}`;
    if (rows.length === 0) await sql.unsafe(`create database "${name}"`);
  } catch (error) {
    // Two processes racing to create it: the loser sees duplicate_database, which is fine.
    if ((error as { code?: string }).code !== '42P04') throw error;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export async function migrateDatabase(url: string): Promise<void> {
  // Roles are cluster-wide, and advisory locks are per database: serialise migrations of every
  // database of one cluster by holding the lock on a connection to the `postgres` database.
  const lockUrl = new URL(url);
  lockUrl.pathname = '/postgres';
  const lock = postgres(lockUrl.toString(), { max: 1, onnotice: () => {} });
  const sql = postgres(url, { max: 1, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  try {
    await lock`select pg_advisory_lock(7431000)`;
    await migrate(drizzle(sql), { migrationsFolder: MIGRATIONS_DIR });
  } finally {
    await lock`select pg_advisory_unlock(7431000)`.catch(() => {});
    await sql.end({ timeout: 5 });
    await lock.end({ timeout: 5 });
  }
}
