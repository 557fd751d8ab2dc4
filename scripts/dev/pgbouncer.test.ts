/**
 * A private PgBouncer 1.18 in transaction pooling (scripts/dev/pgbouncer.ts) and the client settings
 * `createDatabase` applies for a `?pgbouncer=transaction` URL: transactions of clients sharing two
 * server connections work with them, and break without them (a statement prepared on one server
 * connection is executed, by name, on the other, where it does not exist).
 */
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runRecorded } from '../../reconciler/runs.ts';
import { createDatabase, parseDatabaseUrl } from '../../shared/db/client.ts';
import { tryExclusive, tryExclusiveSession } from '../../shared/db/locks.ts';
import { adminUrl } from '../../test/support/env.ts';
import { freePort } from '../../test/support/processes.ts';
import { type PgBouncer, SERVICE_ROLE_POOL_MODES, startPgBouncer } from './pgbouncer.ts';

let pgBouncer: PgBouncer;

beforeAll(async () => {
  const upstream = new URL(adminUrl());
  pgBouncer = await startPgBouncer({
    upstreamHost: upstream.hostname,
    upstreamPort: Number(upstream.port || 5432),
    port: await freePort(),
    users: ['postgres'],
    // Two server connections: consecutive transactions of one client land on either.
    poolSize: 2,
  });
});

afterAll(async () => {
  await pgBouncer?.stop();
});

/**
 * Two clients, each repeating the same transaction concurrently, over the two pooled server
 * connections. A statement prepared by name on one server connection and executed on the other fails;
 * postgres.js retries such a statement unprepared, but not inside a transaction, which the failure has
 * already aborted.
 */
async function interleave(a: postgres.Sql, b: postgres.Sql): Promise<void> {
  const transaction = (sql: postgres.Sql, i: number) =>
    sql.begin(async (tx) => {
      // pg_sleep keeps both server connections busy at once, so the next round lands on whichever
      // is free rather than always on the most recently used one.
      await tx`select ${i}::int + 1 as n, pg_sleep(0.002)`;
      await tx`select ${i}::text || 'x' as s`;
    });
  for (let i = 0; i < 20; i++) {
    await Promise.all([transaction(a, i), transaction(a, i), transaction(b, i), transaction(b, i)]);
  }
}

describe('PgBouncer in transaction pooling', () => {
  it('serves clients through two server connections with the pooled URL settings', async () => {
    const url = pgBouncer.url('postgres', 'postgres');
    expect(url).toContain('pgbouncer=transaction');
    const a = createDatabase({ url, poolMax: 2, applicationName: 'pgb-a' });
    const b = createDatabase({ url, poolMax: 2, applicationName: 'pgb-b' });
    try {
      await interleave(a.sql, b.sql);
      const [row] = await a.sql<{ n: number }[]>`select 41 + 1 as n`;
      expect(row?.n).toBe(42);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('breaks with postgres.js defaults (named prepared statements), which is why the URL says so', async () => {
    const url = parseDatabaseUrl(pgBouncer.url('postgres', 'postgres')).url;
    const a = postgres(url, { max: 2, onnotice: () => {} });
    const b = postgres(url, { max: 2, onnotice: () => {} });
    try {
      await expect(interleave(a, b)).rejects.toThrow(/prepared statement|current transaction is aborted/);
    } finally {
      await a.end({ timeout: 1 });
      await b.end({ timeout: 1 });
    }
  });

  it('refuses a session advisory lock on a transaction-pooled client instead of sharing it', async () => {
    // Advisory locks are re-entrant within a session: behind transaction pooling, a second worker
    // borrowing the server connection that holds the lock would "take" it too.
    const pooled = createDatabase({ url: pgBouncer.url('postgres', 'postgres'), poolMax: 1 });
    const direct = createDatabase({ url: adminUrl(), poolMax: 1 });
    try {
      await expect(tryExclusive(pooled.sql, 7_431_099, 1)).rejects.toThrow(
        /session advisory lock: its DATABASE_URL must be direct or session-pooled/,
      );
      const release = await tryExclusive(direct.sql, 7_431_099, 1);
      expect(release).not.toBeNull();
      await release?.();
    } finally {
      await pooled.close();
      await direct.close();
    }
  });

  it('rejects a pooler mode it does not know, naming the parameter', () => {
    expect(() => parseDatabaseUrl('postgres://u@h:6432/d?pgbouncer=statement')).toThrow(
      'database URL: pgbouncer=statement is not one of transaction, session',
    );
    expect(parseDatabaseUrl('postgres://u@h:6432/d?pgbouncer=transaction&sslmode=disable')).toEqual({
      url: 'postgres://u@h:6432/d?sslmode=disable',
      transactionPooled: true,
    });
  });
});

describe('one PgBouncer, a pool mode per role (SERVICE_ROLE_POOL_MODES)', () => {
  let perRole: PgBouncer;

  beforeAll(async () => {
    const upstream = new URL(adminUrl());
    perRole = await startPgBouncer({
      upstreamHost: upstream.hostname,
      upstreamPort: Number(upstream.port || 5432),
      port: await freePort(),
      users: ['credana_indexer', 'credana_reconciliation', 'credana_hot_path'],
      poolMode: 'transaction',
      userPoolModes: SERVICE_ROLE_POOL_MODES,
      poolSize: 2,
    });
  });

  afterAll(async () => {
    await perRole?.stop();
  });

  it('session-pools the lock-holding roles: one worker holds the chain lock, a second one through the same PgBouncer does not get it', async () => {
    expect(perRole.url('credana_indexer', 'postgres')).not.toContain('pgbouncer=');
    expect(perRole.url('credana_hot_path', 'postgres')).toContain('pgbouncer=transaction');
    const first = createDatabase({ url: perRole.url('credana_indexer', 'postgres'), poolMax: 1 });
    const second = createDatabase({ url: perRole.url('credana_indexer', 'postgres'), poolMax: 1 });
    try {
      const session = await tryExclusiveSession(first.sql, 7_431_098, 1);
      expect(session).not.toBeNull();
      // Under transaction pooling the second client could borrow the lock's server connection and take
      // the lock again (re-entrant); under session pooling it has a server connection of its own.
      expect(await tryExclusiveSession(second.sql, 7_431_098, 1)).toBeNull();
      expect(await session?.held()).toBe(true);
      await session?.release();
      const after = await tryExclusiveSession(second.sql, 7_431_098, 1);
      expect(after).not.toBeNull();
      await after?.release();
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('refuses a reconciliation run on a transaction-pooled client (its one-run-per-job lock is a session lock)', async () => {
    const pooled = createDatabase({ url: perRole.url('credana_hot_path', 'postgres'), poolMax: 1 });
    try {
      await expect(
        runRecorded({ sql: pooled.sql }, 'books', async () => ({
          checked: 0,
          findings: [],
          repairs: 0,
          cursor: null,
        })),
      ).rejects.toThrow(
        /reconciliation runs take a session advisory lock: DATABASE_URL must be direct or session-pooled/,
      );
    } finally {
      await pooled.close();
    }
  });
});
