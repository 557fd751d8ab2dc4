// Proves readiness means ready and reflects what the hot path needs: once started, the decision scripts are in Redis's script cache and the first Postgres connections are open; on a private Postgres cluster and redis-server that the test really stops: with Postgres stopped /readyz stays 200 (postgres:false in the body, credana_dependency_up{dependency="postgres"} 0), with Redis stopped it is 503; and that the public app refuses /metrics (404) unless METRICS_TOKEN is presented, while the internal app serves it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../shared/db/client.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { ADOPT_FALLBACK } from '../shared/lifecycle/lua.ts';
import { createRedis, type Redis } from '../shared/redis/client.ts';
import { asRole } from '../test/support/db.ts';
import { type HotPath, startHotPath } from '../test/support/hot-path.ts';
import {
  type PostgresCluster,
  type RedisServer,
  startPostgresCluster,
  startRedisServer,
} from '../test/support/processes.ts';
import { DECIDE, DECIDE_WITHOUT_USER } from './decision/lua.ts';
import { limits } from './limits.ts';

const METRICS_TOKEN = `metrics_${'q4'.repeat(16)}`;
let pg: PostgresCluster;
let redisServer: RedisServer;
let redis: Redis;
let database: Database;
let hotPath: HotPath;

beforeAll(async () => {
  [pg, redisServer] = await Promise.all([startPostgresCluster(), startRedisServer()]);
  const url = new URL(pg.url);
  url.pathname = '/credana';
  const databaseUrl = url.toString();
  await ensureDatabase(databaseUrl);
  await migrateDatabase(databaseUrl);
  database = createDatabase({ url: databaseUrl });
  redis = createRedis({ url: redisServer.url });
  hotPath = await startHotPath(
    {
      databaseUrl,
      redisUrl: redisServer.url,
      prefix: 'ready:',
      urlFor: (role) => asRole(databaseUrl, role),
    },
    { METRICS_TOKEN },
  );
});

afterAll(async () => {
  await hotPath?.close();
  redis?.disconnect();
  await database?.close();
  await redisServer?.destroy();
  pg?.destroy();
});

async function readyz(app: { request(path: string): Response | Promise<Response> }) {
  const response = await app.request('/readyz');
  return { status: response.status, body: (await response.json()) as Record<string, boolean> };
}

describe('readiness and metrics access', () => {
  it('starts with the decision scripts in Redis and the first Postgres connections open', async () => {
    // This redis-server is the test's own: nothing else loaded the scripts into it.
    expect(await redis.script('EXISTS', DECIDE.sha, DECIDE_WITHOUT_USER.sha, ADOPT_FALLBACK.sha)).toEqual([
      1, 1, 1,
    ]);
    // The hot path's pool (10 by default) keeps idle connections for 30 s: these are the ones opened at start.
    const [row] = await database.sql<{ connections: number }[]>`
      select count(*)::int as connections from pg_stat_activity where application_name = 'hot-path'`;
    expect(row!.connections).toBeGreaterThanOrEqual(limits.postgresConnectionsAtStart);
  });

  it('serves /metrics on the internal app, and on the public app only with the bearer token', async () => {
    const internal = await hotPath.internalApp.request('/metrics');
    expect(internal.status).toBe(200);
    expect(await internal.text()).toContain('credana_decisions_total');
    expect((await hotPath.app.request('/metrics')).status).toBe(404);
    const wrong = await hotPath.app.request('/metrics', { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(404);
    const withToken = await hotPath.app.request('/metrics', {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(withToken.status).toBe(200);
    expect(await withToken.text()).toContain(
      'credana_dependency_up{dependency="redis",service="hot-path"} 1',
    );
  });

  it('stays ready while Postgres is stopped (reported, and in the gauge), and is not ready while Redis is', async () => {
    for (const app of [hotPath.app, hotPath.internalApp])
      expect(await readyz(app)).toEqual({
        status: 200,
        body: { ready: true, redis: true, postgres: true, suspect: false },
      });

    pg.stop();
    for (const app of [hotPath.app, hotPath.internalApp])
      expect(await readyz(app)).toEqual({
        status: 200,
        body: { ready: true, redis: true, postgres: false, suspect: false },
      });
    const metrics = await (await hotPath.internalApp.request('/metrics')).text();
    expect(metrics).toContain('credana_dependency_up{dependency="postgres",service="hot-path"} 0');
    expect(metrics).toContain('credana_dependency_up{dependency="redis",service="hot-path"} 1');

    pg.start();
    await redisServer.kill('SIGKILL');
    for (const app of [hotPath.app, hotPath.internalApp]) {
      const { status, body } = await readyz(app);
      expect(status).toBe(503);
      expect(body).toMatchObject({ ready: false, redis: false, postgres: true });
    }
    const down = await (await hotPath.internalApp.request('/metrics')).text();
    expect(down).toContain('credana_dependency_up{dependency="redis",service="hot-path"} 0');
  });
});
