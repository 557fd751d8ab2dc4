// Proves that a fallback grant whose shard slot is mid-migration (a private six-node Redis Cluster, real
// Postgres) does not make the process suspect when a lease catch-up cannot adopt it yet: the catch-up
// succeeds, the grant stays remembered, and it is adopted before its user's next Redis decision once the
// slot has moved.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FallbackGrant } from '../../shared/lifecycle/adoption.ts';
import { createRedis, type Redis, type SingleRedis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { type RedisCluster, startRedisCluster } from '../../test/support/redis-cluster.ts';
import { newUserId } from '../../test/support/stripe.ts';
import { createRedisLease, type RedisLease } from './redis-lease.ts';

let services: TestServices;
let cluster: RedisCluster;
let redis: Redis;
let lease: RedisLease;
const admins = new Map<number, SingleRedis>();

beforeAll(async () => {
  services = await setUpServices();
  cluster = await startRedisCluster();
  redis = createRedis({ url: 'redis://unused', clusterNodes: cluster.seeds });
  for (const node of cluster.nodes)
    admins.set(node.port, createRedis({ url: `redis://127.0.0.1:${node.port}` }));
  lease = createRedisLease({ sql: services.database.sql, redis, prefix: services.prefix, leaseMs: 1_000 });
});

afterAll(async () => {
  await lease?.stop();
  for (const a of admins.values()) a.disconnect();
  redis?.disconnect();
  await cluster?.destroy();
  await services?.close();
});

function admin(port: number): SingleRedis {
  const a = admins.get(port);
  if (a === undefined) throw new Error(`no node on ${port}`);
  return a;
}

describe('lease catch-up on a Redis Cluster slot being moved', () => {
  it('keeps its own grant for later instead of turning suspect, and adopts it once the slot has moved', async () => {
    expect(await lease.catchUp()).toBe(true);
    const userId = newUserId();
    const keys = userKeys(services.prefix, userId);
    const slot = Number(await redis.cluster('KEYSLOT', keys.account));
    const ranges = (await redis.cluster('SLOTS')) as unknown as [number, number, [string, number, string]][];
    const owners = ranges.map(([from, to, [, port, id]]) => ({ from, to, port, id }));
    const source = owners.find((o) => slot >= o.from && slot <= o.to);
    const target = owners.find((o) => o.port !== source?.port);
    if (source === undefined || target === undefined) throw new Error('no owner');
    // The user's slot held open mid-migration: the adoption script, which creates keys, cannot run.
    await admin(target.port).cluster('SETSLOT', slot, 'IMPORTING', source.id);
    await admin(source.port).cluster('SETSLOT', slot, 'MIGRATING', target.id);

    const grant: FallbackGrant = {
      decisionId: 'dec_leaseredirect',
      eventId: 'evt_leaseredirect',
      authorizationId: 'iauth_leaseredirect',
      userId,
      grantedCents: 1_000n,
      holdExpiresAtMs: Date.now() + 86_400_000,
      authVersion: null,
      stored: '1|1000|approved|dec_leaseredirect',
    };
    lease.remember(grant);
    expect(await lease.catchUp()).toBe(true);
    expect({ suspect: lease.suspect(), mayDecide: lease.mayDecide() }).toEqual({
      suspect: false,
      mayDecide: true,
    });
    expect(await redis.get(keys.decision(grant.eventId))).toBeNull();

    // The slot moves; the user's next Redis decision first adopts the grant.
    await admin(target.port).cluster('SETSLOT', slot, 'NODE', target.id);
    await admin(source.port).cluster('SETSLOT', slot, 'NODE', target.id);
    for (const o of owners) {
      if (o.port !== target.port && o.port !== source.port) {
        await admin(o.port).cluster('SETSLOT', slot, 'NODE', target.id);
      }
    }
    expect(await lease.adoptOwn(userId)).toBe(1);
    expect(await redis.get(keys.decision(grant.eventId))).toBe(grant.stored);
  });
});
