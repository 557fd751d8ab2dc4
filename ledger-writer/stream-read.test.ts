// Proves the writer's stream consumer on real Redis (one Redis or the cluster): both reply shapes of
// XREADGROUP parse; a shard delivers new entries with XREADGROUP '>', and while it has a claim cursor
// first claims the entries another consumer left pending; a shard whose consumer group vanished answers
// empty with the group recreated and counted, and the next entry is read; idle shards are polled after a
// wait that doubles from batchWaitMs up to limits.idlePollMsMax; a read that is not full waits once for
// more; a stopping reader reads nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboxKey } from '../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { limits } from './limits.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import type { OwnedShard } from './shards.ts';
import { createStreamReader, type StreamReaderOptions, streamIdMs, streamReply } from './stream-read.ts';

const GROUP = 'ledger-writer';
let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await services?.close();
});

function ownedShard(shard: number): OwnedShard {
  return {
    shard,
    stream: outboxKey(services.prefix, shard),
    epoch: 1n,
    claimCursor: null,
    validUntilMs: Number.POSITIVE_INFINITY,
    pollMs: 0,
    nextPollAtMs: 0,
  };
}

function reader(shards: OwnedShard[], extra: Partial<StreamReaderOptions> = {}) {
  const metrics = createLedgerWriterMetrics();
  const owned = new Map(shards.map((s) => [s.shard, s]));
  const options: StreamReaderOptions = {
    redis: services.redis,
    group: GROUP,
    consumer: 'reader-test',
    batchMax: 10,
    batchWaitMs: 5,
    metrics,
    ownership: { owned, readable: (shard) => owned.get(shard.shard) === shard },
    isStopping: () => false,
    ...extra,
  };
  return { metrics, ...createStreamReader(options) };
}

async function add(stream: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await services.redis.xadd(stream, '*', 'n', String(i)))!);
  return ids;
}

describe('streamReply and streamIdMs', () => {
  it('reads the RESP2 list of pairs and the flattened RESP3 map alike', () => {
    const entries = [['1-0', ['a', '1']]];
    expect(streamReply([['s1', entries]])).toEqual([['s1', entries]]);
    expect(streamReply(['s1', entries, 's2', []])).toEqual([
      ['s1', entries],
      ['s2', []],
    ]);
    expect(streamReply(null)).toEqual([]);
    expect(streamReply([])).toEqual([]);
    expect(streamIdMs('1700000000123-7')).toBe(1_700_000_000_123);
  });
});

describe('createStreamReader', () => {
  it("reads new entries with '>' and, with a claim cursor, first claims another consumer's pending ones", async () => {
    const shard = ownedShard(0);
    await services.redis.xgroup('CREATE', shard.stream, GROUP, '0', 'MKSTREAM');
    const left = await add(shard.stream, 3);
    // Another consumer read these and died: they are pending for it.
    await services.redis.call(
      'XREADGROUP',
      'GROUP',
      GROUP,
      'dead',
      'COUNT',
      10,
      'STREAMS',
      shard.stream,
      '>',
    );
    const fresh = await add(shard.stream, 2);

    const r = reader([shard]);
    shard.claimCursor = '0-0';
    const claimed = await r.readShard(shard, 10);
    expect(claimed.map((e) => e.id)).toEqual(left);
    expect(claimed[0]!.fields).toEqual({ n: '0' });
    expect(shard.claimCursor).toBeNull();
    expect((await r.metrics.entriesClaimed.get()).values[0]!.value).toBe(3);

    const read = await r.readShard(shard, 10);
    expect(read.map((e) => e.id)).toEqual(fresh);
    expect(await r.readShard(shard, 10)).toEqual([]);
  });

  it('recreates a vanished consumer group, answers empty, and reads what comes after', async () => {
    const shard = ownedShard(1);
    await services.redis.xgroup('CREATE', shard.stream, GROUP, '0', 'MKSTREAM');
    await services.redis.del(shard.stream); // Redis lost its data: the group went with the stream.
    const r = reader([shard]);
    expect(await r.readShard(shard, 10)).toEqual([]);
    expect((await r.metrics.groupsRecreated.get()).values[0]!.value).toBe(1);
    const [id] = await add(shard.stream, 1);
    expect((await r.readShard(shard, 10)).map((e) => e.id)).toEqual([id]);
  });

  it('polls an idle shard after a wait doubling from batchWaitMs to idlePollMsMax, a busy one at once', async () => {
    const idle = ownedShard(2);
    const busy = ownedShard(3);
    for (const s of [idle, busy]) await services.redis.xgroup('CREATE', s.stream, GROUP, '0', 'MKSTREAM');
    const r = reader([idle, busy], { batchWaitMs: 40 });
    await add(busy.stream, 2);
    const first = await r.pollRound();
    expect(first.entries).toHaveLength(2);
    expect(first.epochs).toEqual(new Map([[busy.stream, 1n]]));
    expect(busy.pollMs).toBe(0);
    expect(idle.pollMs).toBe(40);
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      idle.nextPollAtMs = 0;
      await r.pollRound();
      waits.push(idle.pollMs);
    }
    expect(waits).toEqual([80, 160, limits.idlePollMsMax, limits.idlePollMsMax, limits.idlePollMsMax]);
  });

  it('polls once more after batchWaitMs when a read is not full, not when it is, and reads nothing once stopping', async () => {
    const shard = ownedShard(4);
    await services.redis.xgroup('CREATE', shard.stream, GROUP, '0', 'MKSTREAM');
    let stopping = false;
    const r = reader([shard], { batchMax: 3, batchWaitMs: 20, isStopping: () => stopping });
    const polls = async () => (await r.metrics.polls.get()).values.reduce((sum, v) => sum + v.value, 0);
    await add(shard.stream, 1);
    expect((await r.nextRead()).entries).toHaveLength(1);
    expect(await polls()).toBe(2); // the read, then the one after batchWaitMs

    await add(shard.stream, 3);
    expect((await r.nextRead()).entries).toHaveLength(3);
    expect(await polls()).toBe(3); // full: written at once

    stopping = true;
    await add(shard.stream, 1);
    expect((await r.nextRead()).entries).toEqual([]);
    expect(await polls()).toBe(3);
  });
});
