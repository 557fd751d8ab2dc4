// Proves a shard read whose reply was lost with its connection does not let newer entries of the shard
// overtake the ones it delivered (chaos seed 45, docs/chaos.md): Redis runs the XREADGROUP '>' and hands
// its entries to this consumer, the connection drops before the reply arrives, and ioredis sends the
// read again once reconnected, which then delivers the *next* entries while the first ones sit pending
// for this consumer, read by no one. A private redis-server behind a TCP proxy that holds the replies
// back and then cuts the connection; the reader's own client on the proxy, as the writer's is.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createRedis, type Redis } from '../shared/redis/client.ts';
import { outboxKey, shardLeaseKey } from '../shared/redis/keys.ts';
import { type RedisServer, startRedisServer } from '../test/support/processes.ts';
import { startTcpProxy, type TcpProxy } from '../test/support/tcp-proxy.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import type { OwnedShard } from './shards.ts';
import { createShardReader, LEASE_LOST, type ReadEntry } from './stream-read.ts';

const GROUP = 'ledger-writer';
const CONSUMER = 'writer-a';
const WRITER = 'writer-a/1';
let server: RedisServer;
let proxy: TcpProxy;
/** Straight to the server: the test's own view. */
let direct: Redis;
/** Through the proxy: the reader's. */
let viaProxy: Redis;

beforeAll(async () => {
  server = await startRedisServer();
  proxy = await startTcpProxy(server.port);
  direct = createRedis({ url: server.url });
  viaProxy = createRedis({ url: proxy.url('redis') });
});
afterAll(async () => {
  proxy?.resume();
  viaProxy?.disconnect();
  direct?.disconnect();
  await proxy?.close();
  await server?.destroy();
});

async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`not reached in 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

it('claims the entries of a read whose reply was lost before it hands out newer ones', async () => {
  const metrics = createLedgerWriterMetrics();
  const { readShard } = createShardReader({
    redis: viaProxy,
    group: GROUP,
    consumer: CONSUMER,
    writerId: WRITER,
    metrics,
  });
  const shard: OwnedShard = {
    shard: 0,
    stream: outboxKey('lost:', 0),
    leaseKey: shardLeaseKey('lost:', 0),
    epoch: 1n,
    claimCursor: null,
    validUntilMs: Number.POSITIVE_INFINITY,
    pollMs: 0,
    nextPollAtMs: 0,
  };
  await direct.set(shard.leaseKey, WRITER);
  await direct.xgroup('CREATE', shard.stream, GROUP, '0', 'MKSTREAM');
  // A first read loads the read script into the server (an EVALSHA the server does not know yet is
  // answered NOSCRIPT and sent again as EVAL: a reply the stalled proxy would hold back).
  expect(await readShard(shard, 10)).toEqual([]);
  const first = (await direct.xadd(shard.stream, '*', 'n', 'hold'))!;

  // The reader's connection is up (a connection still starting would queue the read in the client).
  expect(await viaProxy.ping()).toBe('PONG');
  // The read reaches Redis; its reply is held in the proxy.
  proxy.stall('toClient');
  const read = readShard(shard, 10);
  await until(async () => {
    const pending = (await direct.xpending(shard.stream, GROUP)) as [number, ...unknown[]];
    return pending[0] === 1;
  }, 'the first entry delivered to the reader');
  // A later entry of the same shard (a capture of that hold, say), then the connection drops with the
  // reply in it. ioredis reconnects and sends the read again.
  const second = (await direct.xadd(shard.stream, '*', 'n', 'capture'))!;
  proxy.cut();
  proxy.resume();

  // What the reader hands out, read after read, until it has handed out both entries (or gives up).
  const ids = (r: ReadEntry[] | typeof LEASE_LOST) =>
    r === LEASE_LOST ? ['lease lost'] : r.map((e) => e.id);
  const handedOut: string[] = ids(await read);
  for (let i = 0; i < 20 && !(handedOut.includes(first) && handedOut.includes(second)); i++)
    handedOut.push(...ids(await readShard(shard, 10)));

  // In the stream's order: the first entry before the second, each once.
  expect(handedOut).toEqual([first, second]);
  expect(await metrics.readsRedone.get()).toMatchObject({ values: [{ value: 1 }] });
  // Both are this consumer's, pending until the writer acks them after writing.
  const pending = (await direct.xpending(shard.stream, GROUP, '-', '+', 10, CONSUMER)) as [string][];
  expect(pending.map((p) => p[0])).toEqual([first, second]);
}, 30_000);
