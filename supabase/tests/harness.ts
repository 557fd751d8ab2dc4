/**
 * Test support for the Supabase database: a fresh database per test file (`credana_sb_<random>`)
 * with the test-only platform bootstrap (bootstrap.sql) and then `supabase/migrations` applied, plus
 * helpers that act as Supabase's API roles the way PostgREST does (`set local role` and
 * `request.jwt.claims` in one transaction) and as Supabase Auth does (rows in auth.users).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { testServiceUrls } from '../../shared/config.ts';
import { applySupabaseMigrations } from '../migrate.ts';

export const BOOTSTRAP_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'bootstrap.sql');

export type Sql = postgres.Sql;
export type TxSql = postgres.TransactionSql;

export interface SupabaseTestDatabase {
  url: string;
  /** Superuser connection: plays Supabase Auth, Studio and our workers' owner role. */
  sql: Sql;
  close(): Promise<void>;
}

function databaseUrl(name: string): string {
  const url = new URL(testServiceUrls().databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** An empty database with only the platform bootstrap (what a new Supabase project has). */
export async function createBootstrappedDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `credana_sb_${randomBytes(6).toString('hex')}`;
  const admin = postgres(databaseUrl('postgres'), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database "${name}"`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  const url = databaseUrl(name);
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(await readFile(BOOTSTRAP_FILE, 'utf8'));
  } finally {
    await sql.end({ timeout: 5 });
  }
  return {
    url,
    async drop() {
      const a = postgres(databaseUrl('postgres'), { max: 1, onnotice: () => {} });
      try {
        await a.unsafe(`drop database if exists "${name}" with (force)`);
      } finally {
        await a.end({ timeout: 5 });
      }
    },
  };
}

export async function createSupabaseTestDatabase(): Promise<SupabaseTestDatabase> {
  const db = await createBootstrappedDatabase();
  await applySupabaseMigrations(db.url);
  const sql = postgres(db.url, { max: 5, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  return {
    url: db.url,
    sql,
    async close() {
      await sql.end({ timeout: 5 });
      await db.drop();
    },
  };
}

export type ApiRole = 'anon' | 'authenticated' | 'service_role';

export interface Caller {
  role: ApiRole;
  /** The JWT claims PostgREST would put in `request.jwt.claims`. */
  claims: Record<string, unknown>;
}

export const anonCaller: Caller = { role: 'anon', claims: { role: 'anon' } };
export const serviceCaller: Caller = { role: 'service_role', claims: { role: 'service_role' } };

export function userCaller(userId: string, appMetadata: Record<string, unknown> = {}): Caller {
  return {
    role: 'authenticated',
    claims: { sub: userId, role: 'authenticated', aud: 'authenticated', app_metadata: appMetadata },
  };
}

export function supportCaller(userId: string): Caller {
  return userCaller(userId, { provider: 'email', role: 'support' });
}

class Rollback extends Error {
  constructor(readonly value: unknown) {
    super('rollback');
  }
}

/**
 * Runs `fn` as the caller, inside a transaction, as PostgREST does for an API request. With
 * `commit: false` (the default) the transaction is rolled back, so fixtures stay as they were.
 * `before` runs first, as the owner, in the same transaction.
 */
export async function asCaller<T>(
  sql: Sql,
  caller: Caller,
  fn: (tx: TxSql) => Promise<T>,
  options: { commit?: boolean; before?: (tx: TxSql) => Promise<void> } = {},
): Promise<T> {
  try {
    return (await sql.begin(async (tx) => {
      if (options.before !== undefined) await options.before(tx);
      await tx`select set_config('request.jwt.claims', ${JSON.stringify(caller.claims)}, true)`;
      await tx.unsafe(`set local role ${caller.role}`);
      const value = await fn(tx);
      if (options.commit !== true) throw new Rollback(value);
      return value;
    })) as T;
  } catch (error) {
    if (error instanceof Rollback) return error.value as T;
    throw error;
  }
}

export interface AuthUserInput {
  id?: string;
  email?: string;
  appMetadata?: Record<string, unknown>;
  userMetadata?: Record<string, unknown>;
}

/** Inserts into auth.users as Supabase Auth does on sign-up. Returns the new user's id. */
export async function signUp(sql: Sql, input: AuthUserInput = {}): Promise<string> {
  const id = input.id ?? randomUUID();
  await sql`insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
    values ('00000000-0000-0000-0000-000000000000', ${id}, 'authenticated', 'authenticated',
      ${input.email ?? `${id.slice(0, 8)}@example.test`},
      ${sql.json((input.appMetadata ?? { provider: 'email', providers: ['email'] }) as postgres.JSONValue)},
      ${sql.json((input.userMetadata ?? {}) as postgres.JSONValue)}, now(), now())`;
  return id;
}

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 5,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`waitFor: nothing after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
