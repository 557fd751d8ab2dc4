// Proves nothing is lost or doubled while Postgres is down: a private PostgreSQL cluster is stopped
// (pg_ctl -m immediate) while entries keep arriving; the writer acks nothing and keeps retrying, and
// once the cluster is back it catches up with every record exactly once.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDatabase, type Database } from '../shared/db/client.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { createRedis, duplicateRedis, type Redis } from '../shared/redis/client.ts';
import { outboxKey } from '../shared/redis/keys.ts';
import { asRole, deletePrefix } from '../test/support/db.ts';
import { redisClusterNodes, redisUrl } from '../test/support/env.ts';
import { seedUser } from '../test/support/fixtures.ts';
import { type PostgresCluster, startPostgresCluster } from '../test/support/processes.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import { decisionFields, outboxBacklog } from './testing.ts';
import { createLedgerWriter, type LedgerWriter } from './writer.ts';

let cluster: PostgresCluster;
let database: Database;
/** The writer's own connection, as its role, straight to the private cluster (which this file stops). */
let writerDatabase: Database;
let redis: Redis;
let writer: LedgerWriter | null = null;
const prefix = `t${randomBytes(5).toString('hex')}:`;

beforeAll(async () => {
  cluster = await startPostgresCluster();
  const url = cluster.url.replace(/\/postgres$/, '/credana');
  await ensureDatabase(url);
  await migrateDatabase(url);
  database = createDatabase({ url, poolMax: 4, connectTimeoutS: 1, applicationName: 'ledger-writer-test' });
  writerDatabase = createDatabase({
    url: asRole(url, 'credana_ledger_writer'),
    poolMax: 4,
    connectTimeoutS: 1,
    applicationName: 'ledger-writer',
  });
  redis = createRedis({ url: redisUrl(), clusterNodes: redisClusterNodes() });
});
afterAll(async () => {
  await writer?.stop();
  await deletePrefix(redis, prefix);
  redis.disconnect();
  await database?.close().catch(() => undefined);
  await writerDatabase?.close().catch(() => undefined);
  cluster?.destroy();
});

const backlog = () => outboxBacklog(redis, prefix);

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

it('keeps every entry while Postgres is down and writes each exactly once when it is back', {
  timeout: 60_000,
}, async () => {
  const { sql } = database;
  const users = await Promise.all([0, 1].map(() => seedUser(sql)));
  const sums = new Map(users.map((u) => [u.userId, 0n]));
  let added = 0;
  async function add(n: number): Promise<void> {
    // Sent together, not as one pipeline: on a cluster the shards' streams live on different nodes.
    const appends: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) {
      const user = users[(added + i) % users.length]!;
      const granted = BigInt(1 + ((added + i) % 97));
      sums.set(user.userId, sums.get(user.userId)! + granted);
      appends.push(
        redis.xadd(
          outboxKey(prefix, (added + i) % 16),
          '*',
          ...decisionFields({ userId: user.userId, cardId: user.cardId, grantedCents: granted }),
        ),
      );
    }
    await Promise.all(appends);
    added += n;
  }
  const metrics = createLedgerWriterMetrics();
  writer = createLedgerWriter({
    redis: duplicateRedis(redis),
    sql: writerDatabase.sql,
    prefix,
    consumer: 'c1',
    batchMax: 100,
    batchWaitMs: 20,
    metrics,
  });
  await writer.start();
  await add(300);
  await waitUntil(async () => (await backlog()) === 0, 15_000, 'first drain');

  cluster.stop();
  for (let i = 0; i < 5; i++) {
    await add(200);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await waitUntil(async () => writer!.state === 'retrying', 10_000, 'writer retrying');
  // Nothing written means nothing acked: every entry added while Postgres was down is still there.
  expect(await backlog()).toBe(1_000);
  expect(await metrics.registry.getSingleMetricAsString('credana_ledger_dead_lettered_total')).not.toMatch(
    / \d+$/m,
  );

  cluster.start();
  await waitUntil(async () => (await backlog()) === 0, 30_000, 'catch-up after restart');
  const [counts] = await sql<
    { decisions: number; transfers: number }[]
  >`select (select count(*)::int from decisions) as decisions,
    (select count(*)::int from ledger_transfers) as transfers`;
  expect(counts).toEqual({ decisions: added, transfers: added });
  for (const [userId, sum] of sums) {
    const [row] = await sql`select holds_cents from credit_accounts where user_id = ${userId}`;
    expect(row).toEqual({ holds_cents: sum.toString() });
  }
  expect(await sql`select * from audit_log_verify()`).toEqual([]);
  expect(writer.state).toBe('running');
});
