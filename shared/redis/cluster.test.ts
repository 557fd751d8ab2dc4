// Proves what differs on a Redis Cluster, on a private six-node cluster of real redis-server processes
// (whatever TEST_REDIS says): the durability check reads every node, replicas too, and names the one
// that is not durable; deleting a prefix scans every primary; and the market, subscribed with sharded
// pub/sub, follows its channels' slot through a real failover (the primary killed) and re-reads what it
// may have missed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisCluster, startRedisCluster } from '../../test/support/redis-cluster.ts';
import { type Cluster, createRedis, deletePrefix, isCluster, primaries, type Redis } from './client.ts';
import { checkRedisDurability } from './durability.ts';
import { channels, pricesKey, userKeys } from './keys.ts';
import { createMarket, publishAsset, publishPriceInForce } from './market.ts';

let cluster: RedisCluster;
let redis: Cluster;
const connections: Redis[] = [];

function connect(options: { shardedSubscriber?: boolean } = {}): Cluster {
  const client = createRedis({ url: 'redis://unused', clusterNodes: cluster.seeds, ...options });
  if (!isCluster(client)) throw new Error('expected a cluster client');
  connections.push(client);
  return client;
}

async function until(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await Promise.resolve(check()).catch(() => false))) {
    if (Date.now() > end) throw new Error(`not reached in ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

beforeAll(async () => {
  cluster = await startRedisCluster();
  redis = connect();
});

afterAll(async () => {
  for (const c of connections) c.disconnect();
  await cluster?.destroy();
});

const warnings = { warn: () => {} };

describe('on a Redis Cluster', () => {
  it('checks the durability of every node, replicas included, and names the one that is not durable', async () => {
    const ok = await checkRedisDurability({
      redis,
      required: 'always',
      nodeEnv: 'production',
      logger: warnings,
    });
    expect(ok.report?.problems).toEqual([]);
    expect(ok.refuse).toBe(false);

    // A replica, found from its own INFO (one that has replicated nothing yet is not in CLUSTER SLOTS).
    const replicaPort = await (async () => {
      for (const node of cluster.nodes) {
        const probe = createRedis({ url: `redis://127.0.0.1:${node.port}` });
        try {
          if ((await probe.info('replication')).includes('role:slave')) return node.port;
        } finally {
          probe.disconnect();
        }
      }
      throw new Error('no replica');
    })();
    const replica = createRedis({ url: `redis://127.0.0.1:${replicaPort}` });
    connections.push(replica);
    await replica.config('SET', 'appendfsync', 'everysec');
    try {
      const weak = await checkRedisDurability({
        redis,
        required: 'always',
        nodeEnv: 'production',
        logger: warnings,
      });
      expect(weak.refuse).toBe(true);
      expect(weak.report?.problems).toEqual([
        `node 127.0.0.1:${replicaPort}: appendfsync is everysec, weaker than REDIS_REQUIRED_APPENDFSYNC=always`,
      ]);
    } finally {
      await replica.config('SET', 'appendfsync', 'always');
    }
  });

  it('deletes a prefix on every primary, not only the one a SCAN happens to reach', async () => {
    const prefix = 'del:';
    const users = Array.from({ length: 64 }, (_, i) => `user-${i}`);
    for (const user of users) await redis.set(userKeys(prefix, user).account, '1');
    const holding = await Promise.all(
      (await primaries(redis)).map(
        async (node) => (await node.scan('0', 'MATCH', `${prefix}*`, 'COUNT', 1000))[1],
      ),
    );
    // The keys really are spread: more than one primary holds some.
    expect(holding.filter((keys) => keys.length > 0).length).toBeGreaterThan(1);
    expect(await deletePrefix(redis, prefix)).toBe(users.length);
    for (const user of users) expect(await redis.exists(userKeys(prefix, user).account)).toBe(0);
  });

  it('keeps the market current through a failover of the primary that owns its channels', async () => {
    const prefix = 'mkt:';
    const nowS = Math.floor(Date.now() / 1000);
    await publishAsset(redis, prefix, {
      assetId: 'WETH',
      tokenDecimals: 18,
      priceDecimals: 8,
      ltvBps: 8_000n,
      liquidationThresholdBps: 8_250n,
      priceAgeMaxS: 3_600,
    });
    await publishPriceInForce(redis, prefix, {
      assetId: 'WETH',
      answer: 100n,
      updatedAtS: nowS,
      roundId: 1n,
    });
    const market = await createMarket(connect(), connect({ shardedSubscriber: true }), prefix);
    try {
      expect(market.prices.get('WETH')?.answer).toBe(100n);
      // Sharded pub/sub reaches it.
      await publishPriceInForce(redis, prefix, {
        assetId: 'WETH',
        answer: 200n,
        updatedAtS: nowS,
        roundId: 2n,
      });
      await until(() => market.prices.get('WETH')?.answer === 200n, 'the published price');

      // A price stored without its message (as if published while the subscriber was away): only a
      // re-read after the subscription moves can bring it in.
      await redis.hset(
        pricesKey(prefix),
        'WETH',
        JSON.stringify({ assetId: 'WETH', answer: '300', updatedAtS: nowS, roundId: '3', inForce: true }),
      );
      const slot = Number(await redis.cluster('KEYSLOT', channels(prefix).prices));
      const ownerKey = redis.slots[slot]?.[0];
      const owner = cluster.nodes.find((n) => `127.0.0.1:${n.port}` === ownerKey);
      if (owner === undefined) throw new Error(`no node owns slot ${slot}`);
      await owner.kill('SIGKILL');
      await until(async () => {
        const node = (await redis.cluster('SLOTS')) as unknown;
        const range = (node as [number, number, [string, number]][]).find(([a, b]) => a <= slot && slot <= b);
        return range !== undefined && range[2][1] !== owner.port;
      }, 'a replica promoted for the channels’ slot');
      await until(() => market.prices.get('WETH')?.answer === 300n, 'the re-read after the failover');

      // And the subscription is on the new primary: a message published now arrives.
      await publishPriceInForce(redis, prefix, {
        assetId: 'WETH',
        answer: 400n,
        updatedAtS: nowS,
        roundId: 4n,
      });
      await until(() => market.prices.get('WETH')?.answer === 400n, 'a price published after the failover');
    } finally {
      market.close();
    }
  });
});
