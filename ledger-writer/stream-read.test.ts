// Proves the writer's stream consumer on real Redis (one Redis or the cluster): both reply shapes of
// XREADGROUP parse; a shard delivers new entries with XREADGROUP '>', and while it has a claim cursor
// first claims the entries another consumer left pending; a shard whose consumer group vanished answers
// empty with the group recreated and counted, and the next entry is read; idle shards are polled after a
// wait that doubles from batchWaitMs up to limits.idlePollMsMax; a read that is not full waits once for
// more; a stopping reader reads nothing; a writer whose lease another writer took is handed nothing (its
// read and its claim check the lease in the same script), so the new owner reads every entry.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboxKey, shardLeaseKey } from '../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { limits } from './limits.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import type { OwnedShard } from './shards.ts';
import {
  createShardReader,
  createStreamReader,
  LEASE_LOST,
  type ReadEntry,
  type StreamReaderOptions,
  streamIdMs,
  streamReply,
} from './stream-read.ts';

const GROUP = 'ledger-writer';
const WRITER = 'reader-test/1';
let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await services?.close();
});

/** A shard this test's writer (WRITER) holds the lease of. */
async function ownedShard(shard: number): Promise<OwnedShard> {
  const leaseKey = shardLeaseKey(services.prefix, shard);
  await services.redis.set(leaseKey, WRITER);
  return {
    shard,
    stream: outboxKey(services.prefix, shard),
    leaseKey,
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
    writerId: WRITER,
    batchMax: 10,
    batchWaitMs: 5,
    metrics,
    ownership: {
      owned,
      readable: (shard) => owned.get(shard.shard) === shard,
      lost: (shard) => owned.delete(shard.shard),
    },
    isStopping: () => false,
    ...extra,
  };
  return { metrics, owned, ...createStreamReader(options) };
}

/** A read's entries; a read that found the lease lost fails the test. */
function held(read: ReadEntry[] | typeof LEASE_LOST): ReadEntry[] {
  if (read === LEASE_LOST) throw new Error('the read found the lease lost');
  return read;
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
    const shard = await ownedShard(0);
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
    const claimed = held(await r.readShard(shard, 10));
    expect(claimed.map((e) => e.id)).toEqual(left);
    expect(claimed[0]!.fields).toEqual({ n: '0' });
    expect(shard.claimCursor).toBeNull();
    expect((await r.metrics.entriesClaimed.get()).values[0]!.value).toBe(3);

    const read = held(await r.readShard(shard, 10));
    expect(read.map((e) => e.id)).toEqual(fresh);
    expect(await r.readShard(shard, 10)).toEqual([]);
  });

  it('recreates a vanished consumer group, answers empty, and reads what comes after', async () => {
    const shard = await ownedShard(1);
    await services.redis.xgroup('CREATE', shard.stream, GROUP, '0', 'MKSTREAM');
    await services.redis.del(shard.stream); // Redis lost its data: the group went with the stream.
    const r = reader([shard]);
    expect(await r.readShard(shard, 10)).toEqual([]);
    expect((await r.metrics.groupsRecreated.get()).values[0]!.value).toBe(1);
    const [id] = await add(shard.stream, 1);
    expect(held(await r.readShard(shard, 10)).map((e) => e.id)).toEqual([id]);
  });

  it('polls an idle shard after a wait doubling from batchWaitMs to idlePollMsMax, a drained one after its wait, a full one at once', async () => {
    const idle = await ownedShard(2);
    const busy = await ownedShard(3);
    for (const s of [idle, busy]) await services.redis.xgroup('CREATE', s.stream, GROUP, '0', 'MKSTREAM');
    const r = reader([idle, busy], { batchWaitMs: 40 });
    await add(busy.stream, 2);
    const first = await r.pollRound();
    expect(first.entries).toHaveLength(2);
    expect(first.epochs).toEqual(new Map([[busy.stream, 1n]]));
    // Drained (2 of the 10 it could read): read with the next batch, not polled again at once.
    expect(busy.pollMs).toBe(40);
    expect(idle.pollMs).toBe(40);
    // A full read (10 of 12): more is waiting, polled again at once.
    await add(busy.stream, 12);
    busy.nextPollAtMs = 0;
    expect((await r.pollRound()).entries).toHaveLength(10);
    expect(busy.pollMs).toBe(0);
    // A trickle halves the wait it had grown to (an empty poll doubles it): about half its polls find some.
    busy.pollMs = 160;
    busy.nextPollAtMs = 0;
    expect((await r.pollRound()).entries).toHaveLength(2);
    expect(busy.pollMs).toBe(80);
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      idle.nextPollAtMs = 0;
      await r.pollRound();
      waits.push(idle.pollMs);
    }
    expect(waits).toEqual([80, 160, limits.idlePollMsMax, limits.idlePollMsMax, limits.idlePollMsMax]);
  });

  it('polls once more after batchWaitMs when a read is not full, not when it is, and reads nothing once stopping', async () => {
    const shard = await ownedShard(4);
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

  it("hands a writer whose lease another writer took nothing, so the new owner reads every entry (a paused writer's late read)", async () => {
    // The writer was paused (SIGSTOP, a long GC) after it judged its lease valid and before its read
    // reached Redis; meanwhile its lease lapsed, another writer took the shard and claimed its pending
    // entries (none). Then an entry arrives, and the paused writer's read and claim reach Redis.
    const shard = await ownedShard(5);
    await services.redis.xgroup('CREATE', shard.stream, GROUP, '0', 'MKSTREAM');
    const paused = reader([shard]);
    await services.redis.set(shard.leaseKey, 'other/1');
    const [hold, capture] = await add(shard.stream, 2);
    expect(await paused.readShard(shard, 10)).toBe(LEASE_LOST);
    shard.claimCursor = '0-0';
    expect(await paused.readShard(shard, 10)).toBe(LEASE_LOST);
    // Nothing was delivered to the paused writer's consumer: no entry waits pending for a fenced writer.
    expect(await services.redis.xpending(shard.stream, GROUP, '-', '+', 10, 'reader-test')).toEqual([]);
    // The poll round lets the shard go (ownership.lost).
    shard.claimCursor = null;
    await paused.pollRound();
    expect(paused.owned.has(shard.shard)).toBe(false);
    // The new owner reads both, in the stream's order.
    const owner = createShardReader({
      redis: services.redis,
      group: GROUP,
      consumer: 'other',
      writerId: 'other/1',
      metrics: createLedgerWriterMetrics(),
    });
    const theirs: OwnedShard = { ...shard, claimCursor: null, epoch: 2n };
    expect(held(await owner.readShard(theirs, 10)).map((e) => e.id)).toEqual([hold, capture]);
  });
});
