/**
 * Postgres stopped behind PgBouncer (docs/chaos.md, bug 1). PgBouncer 1.18 still logs clients in from
 * its cached server parameters, then answers their first query with a FATAL `server_login_retry` and
 * closes. postgres.js 3.4.9 runs its array-types query (`fetch_types`) first on every new connection,
 * dropped that query's promise, and kept the FATAL stored past the socket: an unhandledRejection that
 * killed every service, and the stale error replayed onto a later query. `patches/postgres+3.4.9.patch`
 * delivers the FATAL to the waiting queries instead. A real private Postgres behind a private PgBouncer,
 * through the services' own client (`createDatabase`).
 */
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PgBouncer, startPgBouncer } from '../../scripts/dev/pgbouncer.ts';
import { freePort, type PostgresCluster, startPostgresCluster } from '../../test/support/processes.ts';
import { createDatabase } from './client.ts';

let cluster: PostgresCluster;
let pgBouncer: PgBouncer;

beforeAll(async () => {
  cluster = await startPostgresCluster();
  pgBouncer = await startPgBouncer({
    upstreamHost: '127.0.0.1',
    upstreamPort: cluster.port,
    port: await freePort(),
    users: ['postgres'],
  });
});

afterAll(async () => {
  await pgBouncer?.stop();
  cluster?.destroy();
});

/** A client of its own, no type fetch, one connection: closed by the caller. */
function plainClient(): postgres.Sql {
  return postgres(pgBouncer.url('postgres', 'postgres').replace(/\?.*$/, ''), {
    max: 1,
    prepare: false,
    fetch_types: false,
    connect_timeout: 5,
    onnotice: () => {},
  });
}

const outcome = (settled: PromiseSettledResult<unknown>) =>
  settled.status === 'fulfilled' ? 'ok' : String((settled.reason as Error).message);

describe('postgres.js behind PgBouncer while Postgres is down', () => {
  it('rejects the waiting queries with the FATAL, never unhandled, and recovers', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const db = createDatabase({ url: pgBouncer.url('postgres', 'postgres'), poolMax: 3, connectTimeoutS: 5 });
    try {
      // PgBouncer's pool has logged in once, so it lets clients in from the cached parameters later.
      const warm = plainClient();
      await warm`select 1`;
      await warm.end();

      await cluster.stopAsync();
      // One server login has to fail before PgBouncer fails queries fast (the first query waits for
      // query_wait_timeout, 120 s): a query of another client triggers it; it is ended unanswered.
      const primer = plainClient();
      const primed = primer`select 1`.then(
        () => 'answered',
        (error: Error) => error.message,
      );
      while (!/closing because: connect failed/.test(pgBouncer.log())) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await primer.end({ timeout: 0 });
      expect(await primed).toMatch(/CONNECTION_DESTROYED/);

      // New connections of the services' client: login succeeds, the type fetch gets the FATAL.
      for (let round = 0; round < 3; round++) {
        const settled = await Promise.allSettled([
          db.sql`select 1`,
          db.sql`select 2`,
          db.sql.begin((tx) => tx`select 3`),
        ]);
        expect(settled.map(outcome)).toEqual(
          Array(3).fill('server login has been failing, try again later (server_login_retry)'),
        );
      }

      await cluster.startAsync();
      // PgBouncer fails logins fast for server_login_retry (1 s) after the last failure: wait until a
      // fresh client of its own gets an answer, then every query of the services' client must succeed.
      for (;;) {
        const probe = plainClient();
        const answered = await probe`select 1`.then(
          () => true,
          () => false,
        );
        await probe.end();
        if (answered) break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      for (let round = 0; round < 3; round++) {
        const settled = await Promise.allSettled([
          db.sql`select 1`,
          db.sql`select 2`,
          db.sql.begin((tx) => tx`select 3`),
        ]);
        expect(settled.map(outcome)).toEqual(['ok', 'ok', 'ok']);
      }
      expect(unhandled.map(String)).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await db.close();
    }
  }, 180_000);
});
