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

export function createDatabase(options: DatabaseOptions): Database {
  const sql = postgres(options.url, {
    max: options.poolMax ?? 10,
    connect_timeout: options.connectTimeoutS ?? 5,
    idle_timeout: 30,
    // Seconds before a connection that failed is tried again: doubling from 50 ms to at most 1 s, with
    // jitter. postgres.js's own default grows to 20 s, which after an outage kept a ledger writer lane
    // idle for seconds after Postgres was back (seen in hot-path/ledger-writer/postgres-outage-live.test.ts).
    backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 1) * (0.5 + Math.random() / 2),
    onnotice: () => {},
    // numeric and int8 come back as strings; drizzle's column types turn them into bigint.
    connection: {
      application_name: options.applicationName ?? 'credana',
      statement_timeout: options.statementTimeoutMs ?? 5_000,
      TimeZone: 'UTC',
    },
  });
  // drizzle replaces the client's date parsers and serializers with pass-through ones; our raw
  // queries pass and expect Date objects, so restore postgres.js's own after wiring drizzle
  // (drizzle's timestamp columns accept both).
  const parsers = { ...sql.options.parsers };
  const serializers = { ...sql.options.serializers };
  const db = drizzle(sql, { schema: fullSchema });
  Object.assign(sql.options.parsers, parsers);
  Object.assign(sql.options.serializers, serializers);
  return {
    sql,
    db,
    close: () => sql.end({ timeout: 5 }),
  };
}
