/**
 * What auto-pipelining is worth to the hot path on a Redis Cluster (docs/redis-layout.md, "Resharding":
 * the hot path's cluster client does not auto-pipeline, so that ioredis follows MOVED/ASK per command).
 * A private six-node cluster; one cluster client with and one without auto-pipelining, each driven in
 * turn by `CONCURRENCY` closed loops of a decision-shaped script (9 keys of one shard, writes a hash
 * field, a string and a stream entry) on random shards. Prints throughput, client CPU per script and
 * latency percentiles per phase.
 *   npx tsx scripts/bench-cluster-pipelining.ts [seconds per phase, default 5] [concurrency, default 64]
 */
import { createRedis, type Redis } from '../shared/redis/client.ts';
import { OUTBOX_SHARDS, userKeys } from '../shared/redis/keys.ts';
import { luaScript, runScript } from '../shared/redis/script.ts';
import { startRedisCluster } from '../test/support/redis-cluster.ts';

const SCRIPT = luaScript(`
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HGET', KEYS[2], 'x')
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], n, ARGV[1])
redis.call('SET', KEYS[5], ARGV[2], 'EX', 60)
redis.call('INCRBY', KEYS[6], 1)
redis.call('ZADD', KEYS[7], n, ARGV[1])
redis.call('XADD', KEYS[8], 'MAXLEN', '~', 1000, '*', 'r', ARGV[2])
redis.call('HSET', KEYS[9], 'v', n)
return {'ok', tostring(n)}
`);

const seconds = Number(process.argv[2] ?? 5);
const concurrency = Number(process.argv[3] ?? 64);
// One user per shard: the script's keys are that user's keys (one slot).
const users = Array.from({ length: OUTBOX_SHARDS }, (_, shard) => {
  for (let i = 0; ; i++) {
    const keys = userKeys('bench:', `u${shard}-${i}`);
    if (keys.outbox === `bench:{s:${String(shard).padStart(3, '0')}}:outbox`) return keys;
  }
});

async function phase(redis: Redis, name: string) {
  const latenciesUs: number[] = [];
  const end = performance.now() + seconds * 1000;
  const cpuStart = process.cpuUsage();
  const started = performance.now();
  let n = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const keys = users[Math.floor(Math.random() * users.length)];
        if (keys === undefined) continue;
        const t = performance.now();
        await runScript(
          redis,
          SCRIPT,
          [
            keys.account,
            keys.cards,
            keys.holds,
            keys.holdExpiries,
            keys.decision(`e${n}`),
            keys.daySpend('2026-12-07'),
            keys.velocity,
            keys.outbox,
            keys.authState(`a${n}`),
          ],
          [`a${n}`, 'x'.repeat(1_500)],
        );
        latenciesUs.push((performance.now() - t) * 1000);
        n++;
      }
    }),
  );
  const elapsedS = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  latenciesUs.sort((a, b) => a - b);
  const pct = (p: number) => Math.round(latenciesUs[Math.floor((latenciesUs.length - 1) * p)] ?? 0);
  console.log(
    `${name.padEnd(22)} ${Math.round(n / elapsedS)
      .toString()
      .padStart(6)} scripts/s  client CPU ${((cpu.user + cpu.system) / n).toFixed(1)} µs/script  ` +
      `p50 ${pct(0.5)} µs  p99 ${pct(0.99)} µs`,
  );
}

const cluster = await startRedisCluster();
try {
  const clients = {
    autoPipelining: createRedis({ url: 'redis://unused', clusterNodes: cluster.seeds, autoPipelining: true }),
    perCommand: createRedis({ url: 'redis://unused', clusterNodes: cluster.seeds, autoPipelining: false }),
  };
  console.log(
    `${seconds} s per phase, ${concurrency} concurrent loops, load ${(await loadAverage()).trim()}`,
  );
  for (let round = 0; round < 2; round++) {
    await phase(clients.perCommand, 'per command (hot path)');
    await phase(clients.autoPipelining, 'auto-pipelined');
  }
  console.log(`load after: ${(await loadAverage()).trim()}`);
  for (const c of Object.values(clients)) c.disconnect();
} finally {
  await cluster.destroy();
}

async function loadAverage(): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  return readFile('/proc/loadavg', 'utf8');
}
