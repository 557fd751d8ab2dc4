// Proves how an entry leaves its stream, on real Redis (one Redis or the cluster): ack removes it from the
// stream and the group's pending list; ackBehind lets the ack travel while the caller goes on, one at a
// time, and settled() waits for it; an ack on a stream that vanished with its group resolves (Redis
// answers 0, not an error); deadLetterEntry copies the entry with its error and problem to the dead-letter
// stream, counts it, and only then acks it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadLetterKey, outboxKey } from '../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { createAcker } from './ack.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import { createShardReader } from './stream-read.ts';

const GROUP = 'ledger-writer';
let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await services?.close();
});

function acker() {
  const metrics = createLedgerWriterMetrics();
  const base = {
    redis: services.redis,
    group: GROUP,
    consumer: 'ack-test',
    writerId: 'ack-test/1',
    metrics,
  };
  const { recreateGroupIfGone } = createShardReader(base);
  return {
    metrics,
    ...createAcker({ ...base, prefix: services.prefix, isStopping: () => false, recreateGroupIfGone }),
  };
}

/** Adds `n` entries to `stream` and reads them into the group, so they are pending. */
async function pending(stream: string, n: number): Promise<{ stream: string; id: string }[]> {
  await services.redis.xgroup('CREATE', stream, GROUP, '0', 'MKSTREAM');
  for (let i = 0; i < n; i++) await services.redis.xadd(stream, '*', 'n', String(i));
  const read = await services.redis.xreadgroup(
    'GROUP',
    GROUP,
    'ack-test',
    'COUNT',
    n,
    'STREAMS',
    stream,
    '>',
  );
  expect(read).not.toBeNull();
  return (await services.redis.xrange(stream, '-', '+')).map(([id]) => ({ stream, id }));
}

async function pendingCount(stream: string): Promise<number> {
  const summary = (await services.redis.xpending(stream, GROUP)) as [number, ...unknown[]];
  return Number(summary[0]);
}

describe('createAcker', () => {
  it('acks and deletes, so the stream holds only what is not yet written', async () => {
    const stream = outboxKey(services.prefix, 0);
    const entries = await pending(stream, 4);
    const a = acker();
    await a.ack(entries.slice(0, 3));
    expect(await services.redis.xlen(stream)).toBe(1);
    expect(await pendingCount(stream)).toBe(1);
    await a.ack([]);
    expect(await services.redis.xlen(stream)).toBe(1);
  });

  it('acks behind: the caller goes on at once, the next ack waits for the last, settled() for all', async () => {
    const stream = outboxKey(services.prefix, 1);
    const entries = await pending(stream, 4);
    const a = acker();
    await a.ackBehind(entries.slice(0, 2)); // the previous ack (none) is what it waited for
    await a.ackBehind(entries.slice(2)); // waited for the first
    expect(await services.redis.xlen(stream)).toBeLessThanOrEqual(2);
    await a.settled();
    expect(await services.redis.xlen(stream)).toBe(0);
    expect(await pendingCount(stream)).toBe(0);
  });

  it('resolves at once when the stream vanished with its group (its entries went with it)', async () => {
    const stream = outboxKey(services.prefix, 2);
    const entries = await pending(stream, 1);
    await services.redis.del(stream);
    await acker().ack(entries);
    expect(await services.redis.xlen(stream)).toBe(0);
  });

  it('dead-letters an entry with its error and problem, counts it, then acks it', async () => {
    const stream = outboxKey(services.prefix, 3);
    const [entry] = await pending(stream, 1);
    const a = acker();
    await a.deadLetterEntry({ ...entry!, fields: { n: '0' } }, 'bad record', 'invalid');
    const letters = await services.redis.xrange(deadLetterKey(services.prefix), '-', '+');
    const [, fields] = letters.find(([, f]) => f.includes(entry!.id))!;
    const field = (name: string) => fields[fields.indexOf(name) + 1];
    expect([field('stream'), field('id'), field('error'), field('problem')]).toEqual([
      stream,
      entry!.id,
      'bad record',
      'invalid',
    ]);
    expect((await a.metrics.deadLettered.get()).values).toEqual([
      expect.objectContaining({ labels: { problem: 'invalid' }, value: 1 }),
    ]);
    expect(await services.redis.xlen(stream)).toBe(0);
    expect(await pendingCount(stream)).toBe(0);
  });
});
