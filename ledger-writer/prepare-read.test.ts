// Proves a read is validated before it is written, on real Redis: an entry already deleted from its
// stream (written before, only its ack lost) is acked, an invalid one is dead-lettered as `invalid`, and
// the valid ones come back oldest first across streams, each stream's in its own order, with their raw
// fields kept for a later dead letter.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { deadLetterKey, outboxKey } from '../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { createAcker } from './ack.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import { prepareRead } from './prepare-read.ts';
import { createShardReader } from './stream-read.ts';
import { decisionFields } from './testing.ts';

const GROUP = 'ledger-writer';
let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await services?.close();
});

function toObject(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  return fields;
}

it('acks the deleted, dead-letters the invalid, and puts the valid oldest first', async () => {
  const metrics = createLedgerWriterMetrics();
  const base = {
    redis: services.redis,
    group: GROUP,
    consumer: 'prepare-test',
    writerId: 'prepare-test/1',
    metrics,
  };
  const acker = createAcker({
    ...base,
    prefix: services.prefix,
    isStopping: () => false,
    recreateGroupIfGone: createShardReader(base).recreateGroupIfGone,
  });
  const [a, b] = [outboxKey(services.prefix, 0), outboxKey(services.prefix, 1)];
  for (const stream of [a, b]) await services.redis.xgroup('CREATE', stream, GROUP, '0', 'MKSTREAM');
  const fields = () => decisionFields({ userId: crypto.randomUUID(), cardId: 'ic_test', grantedCents: 5n });
  const deleted = (await services.redis.xadd(a, '*', 'n', '0'))!;
  const invalid = (await services.redis.xadd(a, '*', 'r', '{not json'))!;
  const b1Fields = fields();
  await services.redis.xadd(b, '1-1', ...b1Fields);
  await services.redis.xadd(b, '3-1', ...fields());
  await services.redis.xadd(a, '9999999999999-0', ...fields());
  await services.redis.xadd(a, '9999999999999-1', ...fields());
  for (const stream of [a, b]) {
    // One stream per command: one slot each on a cluster.
    await services.redis.xreadgroup('GROUP', GROUP, 'prepare-test', 'COUNT', 10, 'STREAMS', stream, '>');
  }
  const raw = async (stream: string, id: string) => {
    const [entry] = await services.redis.xrange(stream, id, id);
    return { stream, id, fields: toObject(entry![1]) };
  };
  const epochs = new Map([
    [a, 1n],
    [b, 2n],
  ]);

  const prepared = await prepareRead(
    {
      entries: [
        { stream: a, id: deleted, fields: null },
        await raw(a, invalid),
        await raw(a, '9999999999999-0'),
        await raw(a, '9999999999999-1'),
        await raw(b, '3-1'),
        await raw(b, '1-1'),
      ],
      epochs,
    },
    acker,
  );

  expect(prepared.read).toBe(6);
  expect(prepared.epochs).toBe(epochs);
  // By time across streams; b's two were read out of order on purpose and come back by time too.
  expect(prepared.valid.map((e) => `${e.stream === a ? 'a' : 'b'} ${e.id}`)).toEqual([
    'b 1-1',
    'b 3-1',
    'a 9999999999999-0',
    'a 9999999999999-1',
  ]);
  expect(prepared.raws.get(`${b} 1-1`)).toEqual({ stream: b, id: '1-1', fields: toObject(b1Fields) });
  expect(prepared.raws.size).toBe(4);
  // The deleted one and the invalid one are acked (and deleted); the valid ones are still pending.
  const pendingIds = (await services.redis.xpending(a, GROUP, '-', '+', 10)) as [string, ...unknown[]][];
  expect(pendingIds.map(([id]) => id)).toEqual(['9999999999999-0', '9999999999999-1']);
  const letters = await services.redis.xrange(deadLetterKey(services.prefix), '-', '+');
  expect(letters).toHaveLength(1);
  expect(letters[0]![1]).toEqual(expect.arrayContaining(['id', invalid, 'problem', 'invalid']));
});
