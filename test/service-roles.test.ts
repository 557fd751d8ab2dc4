/**
 * The hot path and the ledger writer under the SQL roles they run as in production
 * (`credana_hot_path`, `credana_ledger_writer`, drizzle/0001), not as the superuser the other tests
 * use: every statement of a decision (the account rebuilt from Postgres), of lifecycle events, of the
 * writer's batch and of the Postgres fallback must be allowed by the grants — a missing grant would show
 * here as a decline or a writer that never drains. The same scenario runs twice: connected directly,
 * and through a private PgBouncer 1.18 in transaction pooling (scripts/dev/pgbouncer.ts), as production
 * connects them. Last, the suite's own route: what every other test file hands the services it starts
 * (test/support/db.ts), each role through the suite's PgBouncer, session-pooled where a session lock is held.
 */
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createLedgerWriterMetrics } from '../ledger-writer/metrics.ts';
import { waitForEmptyOutbox } from '../ledger-writer/testing.ts';
import { createLedgerWriter } from '../ledger-writer/writer.ts';
import { type PgBouncer, SERVICE_ROLES, startPgBouncer } from '../scripts/dev/pgbouncer.ts';
import { testServiceUrls } from '../shared/config.ts';
import { createDatabase, type Database } from '../shared/db/client.ts';
import { tryExclusiveSession } from '../shared/db/locks.ts';
import { createRedis, type Redis } from '../shared/redis/client.ts';
import { conservationProblems } from './support/conservation.ts';
import { setUpServices, type TestServices } from './support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from './support/fixtures.ts';
import { type HotPath, post, startHotPath, WETH_PRICE_E8 } from './support/hot-path.ts';
import { freePort, type RedisServer, startRedisServer } from './support/processes.ts';
import { authorizationEvent, authorizationRequest, transactionEvent } from './support/stripe.ts';

const ROLES = ['postgres', 'credana_hot_path', 'credana_ledger_writer'] as const;

describe.each(['direct', 'pgbouncer'] as const)('services under their own SQL roles (%s)', (route) => {
  let services: TestServices;
  let redisServer: RedisServer;
  let redis: Redis;
  let hotPath: HotPath;
  let writerDatabase: Database;
  let pgBouncer: PgBouncer | undefined;

  /** The test database's URL, logged in as `role` (trust authentication on this machine's Postgres). */
  function asRole(role: string): string {
    const url = new URL(services.databaseUrl);
    if (pgBouncer !== undefined) return pgBouncer.url(role, url.pathname.slice(1));
    url.username = role;
    url.password = '';
    return url.toString();
  }

  beforeAll(async () => {
    services = await setUpServices();
    if (route === 'pgbouncer') {
      const upstream = new URL(services.databaseUrl);
      pgBouncer = await startPgBouncer({
        upstreamHost: upstream.hostname,
        upstreamPort: Number(upstream.port || 5432),
        port: await freePort(),
        users: ROLES,
        // One server connection per role: a statement that leaned on a session (a prepared
        // statement, a session setting) would meet another client's state at once.
        poolSize: 1,
      });
    }
    // A private Redis: it is stopped below to send the hot path to its Postgres fallback.
    redisServer = await startRedisServer();
    redis = createRedis({ url: redisServer.url });
    await seedAsset(
      services.database.sql,
      redis,
      services.prefix,
      WETH,
      WETH_PRICE_E8,
      Math.floor(Date.now() / 1000),
    );
    hotPath = await startHotPath(services, {
      DATABASE_URL: asRole('credana_hot_path'),
      REDIS_URL: redisServer.url,
      REDIS_COMMAND_TIMEOUT_MS: '200',
    });
    writerDatabase = createDatabase({ url: asRole('credana_ledger_writer'), applicationName: 'roles-test' });
  });

  afterAll(async () => {
    await hotPath?.close();
    await writerDatabase?.close();
    redis?.disconnect();
    await redisServer?.destroy();
    await pgBouncer?.stop();
    await services?.close();
  });

  it('decides, applies lifecycle events, writes the ledger and falls back to Postgres with only their grants', async () => {
    const { sql } = services.database;
    const [whoHotPath] = await hotPath.database.sql<{ current_user: string }[]>`select current_user`;
    const [whoWriter] = await writerDatabase.sql<{ current_user: string }[]>`select current_user`;
    expect([whoHotPath?.current_user, whoWriter?.current_user]).toEqual([
      'credana_hot_path',
      'credana_ledger_writer',
    ]);
    if (pgBouncer !== undefined) {
      // The connections really go through PgBouncer, and the role's own statement timeout applies
      // there (drizzle/0009: PgBouncer 1.18 cannot pass the startup parameter on).
      const admin = postgres(pgBouncer.url('postgres', 'pgbouncer').split('?')[0]!, {
        max: 1,
        fetch_types: false,
        onnotice: () => {},
      });
      const clients = await admin.unsafe('show clients').simple();
      await admin.end();
      const serviceClients = clients.filter((client) => client['database'] !== 'pgbouncer');
      expect(new Set(serviceClients.map((client) => client['user']))).toEqual(new Set(ROLES.slice(1)));
      const [timeout] = await hotPath.database.sql<{ statement_timeout: string }[]>`show statement_timeout`;
      expect(timeout?.statement_timeout).toBe('5s');
    }

    const user = await seedUser(sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(10_000n, WETH_PRICE_E8) }],
    });
    const authorize = async (amountCents: number, cardId = user.cardId) =>
      (await post(hotPath, '/stripe/authorizations', authorizationRequest({ cardId, amountCents }))).json;
    // The first decision rebuilds the account from Postgres as credana_hot_path.
    const first = authorize(1_000);
    const approved = [await first, await authorize(2_000)];
    expect(approved.map((a) => a.approved)).toEqual([true, true]);
    expect((await authorize(50_000)).metadata?.reason).toBe('insufficient_credit');
    expect((await authorize(100, 'ic_nobody')).metadata?.reason).toBe('unknown_card');

    // Lifecycle events for an authorization decided above: created, then captured in part.
    const authorizationId = 'iauth_roles_1';
    const t = Math.floor(Date.now() / 1000);
    const decided = await post(
      hotPath,
      '/stripe/authorizations',
      authorizationRequest({ cardId: user.cardId, amountCents: 1_500, authorizationId }),
    );
    expect(decided.json.approved).toBe(true);
    for (const event of [
      authorizationEvent({
        type: 'issuing_authorization.created',
        cardId: user.cardId,
        authorizationId,
        amountCents: 1_500,
        approved: true,
        status: 'pending',
        requestHistory: 1,
        createdS: t,
      }),
      transactionEvent({
        cardId: user.cardId,
        type: 'capture',
        amountCents: 1_000,
        authorizationId,
        createdS: t + 1,
      }),
    ]) {
      const res = await post(hotPath, '/stripe/events', event);
      expect(res.json).toMatchObject({ received: true, processed: true, duplicate: false });
    }

    // The writer drains everything as credana_ledger_writer.
    const writerRedis = createRedis({ url: redisServer.url });
    const writer = createLedgerWriter({
      redis: writerRedis,
      sql: writerDatabase.sql,
      prefix: services.prefix,
      consumer: 'roles-test',
      batchMax: 100,
      batchWaitMs: 10,
      metrics: createLedgerWriterMetrics(),
    });
    await writer.start();
    await waitForEmptyOutbox(redis, services.prefix, 20_000);
    await writer.stop();
    writerRedis.disconnect();
    const [counts] = await sql<{ decisions: number; transfers: number; audit: number }[]>`select
      (select count(*)::int from decisions) as decisions,
      (select count(*)::int from ledger_transfers) as transfers,
      (select count(*)::int from audit_log) as audit`;
    // 5 decisions (3 approved, 2 declined); transfers: 3 holds, the capture.
    expect(counts).toEqual({ decisions: 5, transfers: 4, audit: 4 });
    expect(await conservationProblems(sql, redis, services.prefix, [user.userId])).toEqual([]);
    expect(await sql`select * from audit_log_verify()`).toEqual([]);

    // Redis gone: the fallback decides and books in Postgres as credana_hot_path.
    await redisServer.kill();
    const fallback = await authorize(500);
    expect(fallback.approved).toBe(true);
    const [row] = await sql<{ source: string; approved: boolean }[]>`
      select source, approved from decisions where id = ${fallback.metadata?.decision_id ?? ''}`;
    expect(row).toEqual({ source: 'postgres', approved: true });
  });
});

describe("the suite's own route (test/support/db.ts)", () => {
  it('hands each service its role through the suite PgBouncer, session-pooled where it holds a session lock', async () => {
    const services = await setUpServices();
    try {
      const port = inject('testPgBouncerPort');
      expect(port === null).toBe(testServiceUrls().databaseRoute === 'direct');
      const hotPath = new URL(services.urlFor('credana_hot_path'));
      const indexer = new URL(services.urlFor('credana_indexer'));
      const database = new URL(services.databaseUrl).pathname;
      expect([hotPath.pathname, indexer.pathname]).toEqual([database, database]);
      if (port !== null) {
        expect([hotPath.port, hotPath.searchParams.get('pgbouncer')]).toEqual([String(port), 'transaction']);
        expect([indexer.port, indexer.searchParams.get('pgbouncer')]).toEqual([String(port), null]);
      }
      for (const role of SERVICE_ROLES) {
        const [row] = await services.sqlFor(role)<{ who: string }[]>`select current_user as who`;
        expect(row?.who).toBe(role);
      }
      // The indexer's chain lock through that route is its own: a second worker does not get it.
      const first = services.databaseFor('credana_indexer', { poolMax: 1 });
      const second = services.databaseFor('credana_indexer', { poolMax: 1 });
      const session = await tryExclusiveSession(first.sql, 7_431_097, 1);
      expect(session).not.toBeNull();
      expect(await tryExclusiveSession(second.sql, 7_431_097, 1)).toBeNull();
      await session?.release();
      if (port !== null) {
        // And PgBouncer sees every role as a client of this file's database.
        const admin = postgres(`postgres://postgres@127.0.0.1:${port}/pgbouncer`, {
          max: 1,
          fetch_types: false,
          onnotice: () => {},
        });
        try {
          const clients = (await admin.unsafe('show clients').simple()).filter(
            (client) => client['database'] === database.slice(1),
          );
          expect(new Set(clients.map((client) => client['user']))).toEqual(new Set(SERVICE_ROLES));
        } finally {
          await admin.end();
        }
      }
    } finally {
      await services.close();
    }
  });
});
