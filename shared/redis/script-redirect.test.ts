// Proves runScript's handling of a slot held mid-migration on a private six-node Redis Cluster: a script that
// would create a key there is refused (ASK, then TRYAGAIN or MOVED), recognised as a redirect; with a
// redirect policy it is resent until the slot has moved, and given up at its deadline; and why the hot path
// does not auto-pipeline on a cluster (ioredis hands an ASK in a mixed batch back instead of following it).
import { ReplyError } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisCluster, startRedisCluster } from '../../test/support/redis-cluster.ts';
import { createRedis, type Redis, type SingleRedis } from './client.ts';
import { type ClusterRedirect, clusterRedirectOf, luaScript, runScript } from './script.ts';

/** Reads one key and creates another, like the decision script (which always creates its decision key). */
const READ_AND_CREATE = luaScript(`
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[2], v)
return v`);
const TAG = '{redirect-test}';
const EXISTING = `${TAG}:existing`;

let cluster: RedisCluster;
let redis: Redis;
let pipelined: Redis;
const admins = new Map<number, SingleRedis>();
let slot: number;
let source: { port: number; id: string };
let target: { port: number; id: string };

beforeAll(async () => {
  cluster = await startRedisCluster();
  const options = { url: 'redis://unused', clusterNodes: cluster.seeds };
  redis = createRedis({ ...options, clusterRedirections: { max: 4, tryAgainDelayMs: 10 } });
  pipelined = createRedis({ ...options, autoPipelining: true });
  for (const node of cluster.nodes)
    admins.set(node.port, createRedis({ url: `redis://127.0.0.1:${node.port}` }));
  await redis.set(EXISTING, 'v');
  slot = Number(await redis.cluster('KEYSLOT', TAG));
  const ranges = (await redis.cluster('SLOTS')) as unknown as [number, number, [string, number, string]][];
  const owners = ranges.map(([from, to, [, port, id]]) => ({ from, to, port, id }));
  const owner = owners.find((o) => slot >= o.from && slot <= o.to);
  const other = owners.find((o) => o.port !== owner?.port);
  if (owner === undefined || other === undefined) throw new Error('no owner');
  source = owner;
  target = other;
  // The slot held open mid-migration, its one key already on the target.
  await admin(target.port).cluster('SETSLOT', slot, 'IMPORTING', source.id);
  await admin(source.port).cluster('SETSLOT', slot, 'MIGRATING', target.id);
  await admin(source.port).call(
    'MIGRATE',
    '127.0.0.1',
    String(target.port),
    '',
    '0',
    '5000',
    'KEYS',
    EXISTING,
  );
});

afterAll(async () => {
  for (const a of admins.values()) a.disconnect();
  redis?.disconnect();
  pipelined?.disconnect();
  await cluster?.destroy();
});

function admin(port: number): SingleRedis {
  const a = admins.get(port);
  if (a === undefined) throw new Error(`no node on ${port}`);
  return a;
}

const run = (created: string, policy?: Parameters<typeof runScript>[4]) =>
  runScript<string>(redis, READ_AND_CREATE, [EXISTING, `${TAG}:${created}`], [], policy);

describe('runScript on a slot being moved', () => {
  it('without a policy: refused once the client has spent its redirects, recognised as a redirect', async () => {
    const error = await run('a').catch((e: unknown) => e);
    // ioredis follows the ASK, gets TRYAGAIN from the target and resends that to a random primary, which
    // answers MOVED: which redirect comes last varies from run to run, that it is one does not.
    expect(String(error)).toMatch(/TRYAGAIN|MOVED|ASK/);
    expect(['tryagain', 'moved', 'ask']).toContain(clusterRedirectOf(error));
    expect(await redis.exists(`${TAG}:a`)).toBe(0);
    // By the reply's class and first word, never a plain error's text (shared/errors.ts replyCode).
    expect(clusterRedirectOf(new ReplyError('MOVED 12 127.0.0.1:7000'))).toBe('moved');
    expect(clusterRedirectOf(new ReplyError('ASK 12 127.0.0.1:7000'))).toBe('ask');
    expect(clusterRedirectOf(new Error('MOVED 12 127.0.0.1:7000'))).toBeNull();
    expect(clusterRedirectOf(new Error('Connection is closed.'))).toBeNull();
  });

  it('an auto-pipelined batch mixing the moving slot with another key hands the redirect back', async () => {
    // Why the hot path does not auto-pipeline on a cluster (redis/ioredis#2075): one tick, one batch.
    const [script, other] = await Promise.allSettled([
      runScript(pipelined, READ_AND_CREATE, [EXISTING, `${TAG}:b`], []),
      pipelined.get(`${TAG}-elsewhere`),
    ]);
    expect(other.status).toBe('fulfilled');
    expect(script.status).toBe('rejected');
    // Not followed: the raw ASK (or TRYAGAIN) of the source reaches the caller.
    expect(clusterRedirectOf(script.status === 'rejected' ? script.reason : null)).not.toBeNull();
  });

  it('with a policy: gives up at its deadline, after resending', async () => {
    const retries: ClusterRedirect[] = [];
    const error = await run('c', {
      retriesMax: 1_000,
      tryAgainDelayMs: 10,
      deadlineMs: Date.now() + 150,
      onRetry: (r) => retries.push(r),
    }).catch((e: unknown) => e);
    // The last redirect of the client's own resends (see the first test): TRYAGAIN, MOVED or ASK.
    expect(['tryagain', 'moved', 'ask']).toContain(clusterRedirectOf(error));
    expect(retries.length).toBeGreaterThan(0);
    expect(await redis.exists(`${TAG}:c`)).toBe(0);
  });

  it('with a policy: resent until the slot has moved, then runs once', async () => {
    const retries: ClusterRedirect[] = [];
    let closed = false;
    const result = run('d', {
      retriesMax: 1_000,
      tryAgainDelayMs: 10,
      deadlineMs: Date.now() + 20_000,
      onRetry: (r) => {
        retries.push(r);
        // The slot is handed to the target once the script has certainly been refused.
        if (closed) return;
        closed = true;
        void (async () => {
          await admin(target.port).cluster('SETSLOT', slot, 'NODE', target.id);
          await admin(source.port).cluster('SETSLOT', slot, 'NODE', target.id);
          for (const node of cluster.nodes) {
            if (node.port === target.port || node.port === source.port) continue;
            await admin(node.port)
              .cluster('SETSLOT', slot, 'NODE', target.id)
              .catch(() => {}); // a replica refuses: gossip tells it
          }
        })();
      },
    });
    expect(await result).toBe('v');
    // Refused before it ran: the last of the client's redirects is TRYAGAIN or, as ioredis resends a
    // TRYAGAIN to a random primary, that node's MOVED.
    expect(retries.length).toBeGreaterThan(0);
    expect(await admin(target.port).get(`${TAG}:d`)).toBe('v');
  });
});
