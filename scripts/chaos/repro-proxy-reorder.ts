/**
 * Reproduces chaos bug 8 (seed 17: a user's lifecycle events booked under another user's keys): the
 * hot path's card → user lookup (shared/lifecycle/card-owners.ts, on an ioredis connection set up as
 * the hot path's: auto-pipelining, 150 ms command timeout, no offline queue) through the chaos
 * harness's TCP proxy while a `redis_latency` fault of 153 ms is put on and lifted, with the event loop
 * busy with other I/O as the harness's is. Before the proxy kept one queue per direction, a chunk that
 * arrived after the latency was lifted could be written ahead of a delayed one, so Redis's replies
 * reached ioredis out of order and went to the wrong commands: HGET of one card answered with another
 * card's owner, which the process then caches for good. Prints how many lookups got another card's
 * user: 0 once fixed (the old proxy gave 242, 314 and 55 of 1,434, 1,584 and 591 in three runs).
 * Uses the machine's shared Redis (127.0.0.1:6379) under a key prefix of its own, deleted at the end.
 *
 *   npx tsx scripts/chaos/repro-proxy-reorder.ts
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { createCardOwners } from '../../shared/lifecycle/card-owners.ts';
import { createRedis } from '../../shared/redis/client.ts';
import { cardIndexKey } from '../../shared/redis/keys.ts';
import { startTcpProxy } from '../../test/support/tcp-proxy.ts';

const REDIS_PORT = 6379;
const prefix = `repro-reorder-${randomBytes(4).toString('hex')}:`;
const admin = createRedis({ url: `redis://127.0.0.1:${REDIS_PORT}` });
const cards = Array.from({ length: 6 }, (_, i) => [`ic_card${i}`, `user-${i}`] as const);
await admin.hset(cardIndexKey(prefix), ...cards.flat());
const proxy = await startTcpProxy(REDIS_PORT);
const redis = createRedis({
  url: proxy.url('redis'),
  commandTimeoutMs: 150,
  offlineQueue: false,
  connectionName: 'repro-hot-path',
  autoPipelining: true,
});
await new Promise((resolve) => redis.once('ready', resolve));

// Other I/O of the same process (the harness's other proxies, the workload's HTTP): a ping-pong socket
// pair whose data handler keeps the loop busy 8 ms at a time.
const echo = net.createServer((socket) => socket.on('data', (data) => socket.write(data)));
await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
const pinger = net.connect((echo.address() as net.AddressInfo).port, '127.0.0.1');
let noisy = true;
pinger.on('data', () => {
  const untilMs = Date.now() + 8;
  while (Date.now() < untilMs) {
    // busy
  }
  if (noisy) setTimeout(() => pinger.write('p'), 2);
});
pinger.write('p');

let right = 0;
let wrong = 0;
let failed = 0;
const examples: string[] = [];
for (let round = 0; round < 40; round++) {
  proxy.setLatencyMs(153);
  // A process that has not seen these cards yet (each round), as hot-path-0 after its restart.
  const owners = createCardOwners({ redis, sql: null as never, prefix });
  const lookups: Promise<void>[] = [];
  let next = round;
  // One card at a time, in turn (swipes and events come in one by one), so a reply that goes to the
  // wrong command is another card's.
  const timer = setInterval(() => {
    const [card, owner] = cards[next++ % cards.length]!;
    lookups.push(
      owners.lookUp(card).then(
        ({ userId }) => {
          if (userId === owner) right++;
          else {
            wrong++;
            if (examples.length < 5) examples.push(`${card} → ${userId} (its owner: ${owner})`);
          }
        },
        () => {
          failed++;
        },
      ),
    );
  }, 3);
  await new Promise((resolve) => setTimeout(resolve, 120 + (round % 7) * 20));
  proxy.setLatencyMs(0);
  await new Promise((resolve) => setTimeout(resolve, 200));
  clearInterval(timer);
  await Promise.all(lookups);
}
noisy = false;
pinger.destroy();
echo.close();
console.log(`${right} lookups right, ${wrong} answered with another card's user, ${failed} timed out`);
for (const example of examples) console.log(`  ${example}`);
await admin.del(cardIndexKey(prefix));
redis.disconnect();
admin.disconnect();
await proxy.close();
