/**
 * Connections to the financial database: postgres.js underneath, drizzle on top. Factories only —
 * no module-level pool — so every process and every test owns and closes its own.
 */
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as customSchema from './custom-objects.ts';
import * as schema from './schema.ts';

export const fullSchema = { ...schema, ...customSchema };
export type Db = PostgresJsDatabase<typeof fullSchema>;
export type Sql = postgres.Sql;
/** A transaction handle (`sql.begin(async (tx) => …)`); writes that must be atomic take this. */
export type Tx = postgres.TransactionSql;

export interface DatabaseOptions {
  url: string;
  poolMax?: number;
  statementTimeoutMs?: number;
  /** Shown in pg_stat_activity; name the service. */
  applicationName?: string;
  /** Seconds to wait for a connection before failing. */
  connectTimeoutS?: number;
}

export interface Database {
  sql: Sql;
  db: Db;
  close(): Promise<void>;
}

/**
 * The URL parameter that says the URL goes through a transaction pooler (PgBouncer 1.18,
 * `pool_mode = transaction`): `postgres://credana_hot_path@pgbouncer:6432/credana?pgbouncer=transaction`.
 * Such a connection sends no named prepared statements (1.18 cannot follow them from one server
 * connection to the next) and no `statement_timeout` startup parameter (1.18 rejects parameters it does
 * not track; the role's own setting applies, drizzle/0009). Stripped before the URL reaches postgres.js,
 * which would otherwise send it to the server as a startup parameter.
 */
export const POOLED_URL_PARAM = 'pgbouncer';

/** The URL without the pooler parameter, and whether it named a transaction pooler. */
export function parseDatabaseUrl(url: string): { url: string; transactionPooled: boolean } {
  const parsed = new URL(url);
  const mode = parsed.searchParams.get(POOLED_URL_PARAM);
  if (mode === null) return { url, transactionPooled: false };
  if (mode !== 'transaction' && mode !== 'session') {
    throw new Error(`database URL: ${POOLED_URL_PARAM}=${mode} is not one of transaction, session`);
  }
  parsed.searchParams.delete(POOLED_URL_PARAM);
  return { url: parsed.toString(), transactionPooled: mode === 'transaction' };
}

/** Clients made by `createDatabase` on a transaction-pooled URL (see `isTransactionPooled`). */
const transactionPooledClients = new WeakSet<Sql>();

/**
 * True when `sql` goes through a transaction pooler: session state (a session advisory lock, LISTEN,
 * `SET`) would stay on a server connection other clients then borrow. Code that needs a session asks
 * this and refuses, instead of silently sharing its lock.
 */
export function isTransactionPooled(sql: Sql): boolean {
  return transactionPooledClients.has(sql);
}

export function createDatabase(options: DatabaseOptions): Database {
  const { url, transactionPooled } = parseDatabaseUrl(options.url);
  const sql = postgres(url, {
    max: options.poolMax ?? 10,
    prepare: !transactionPooled,
    connect_timeout: options.connectTimeoutS ?? 5,
    idle_timeout: 30,
    // Seconds before a connection that failed is tried again: doubling from 50 ms to at most 1 s, with
    // jitter. postgres.js's own default grows to 20 s, which after an outage kept a ledger writer lane
    // idle for seconds after Postgres was back (seen in ledger-writer/postgres-outage-live.test.ts).
    backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 1) * (0.5 + Math.random() / 2),
    onnotice: () => {},
    // numeric and int8 come back as strings; drizzle's column types turn them into bigint.
    connection: {
      application_name: options.applicationName ?? 'credana',
      ...(transactionPooled ? {} : { statement_timeout: options.statementTimeoutMs ?? 5_000 }),
      TimeZone: 'UTC',
    },
  });
  // drizzle replaces the client's date parsers and serializers with pass-through ones; our raw
  // queries pass and expect Date objects, so restore postgres.js's own after wiring drizzle
  // (drizzle's timestamp columns accept both).
  const parsers = { ...sql.options.parsers };
  const serializers = { ...sql.options.serializers };
  if (transactionPooled) transactionPooledClients.add(sql);
  const db = drizzle(sql, { schema: fullSchema });
  Object.assign(sql.options.parsers, parsers);
  Object.assign(sql.options.serializers, serializers);
  return {
    sql,
    db,
    close: () => sql.end({ timeout: 5 }),
  };
}
