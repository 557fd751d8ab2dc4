// Proves the indexer reads its remembered blocks and its events in chain order across a power of ten
// (block 99, then 100): the reorg walk-back starts at the newest block, and undo and waiting events
// apply in chain order (as text, "99" sorted above "105"; docs/chaos.md, chain bug 1).
import type { Hex } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { eventsAbove, insertBlocks, recentBlocks, waitingEvents } from './index.ts';

const CHAIN_ID = 31_337;
let services: TestServices;

const hash = (n: number): Hex => `0x${n.toString(16).padStart(64, '0')}`;

beforeAll(async () => {
  services = await setUpServices();
  const sql = services.database.sql;
  await insertBlocks(
    sql,
    CHAIN_ID,
    Array.from({ length: 11 }, (_, i) => ({
      number: BigInt(95 + i),
      hash: hash(95 + i),
      parentHash: hash(94 + i),
      timestamp: BigInt(1_700_000_000 + i),
    })),
  );
  for (const block of [98, 99, 100, 101]) {
    await sql`insert into chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address,
        event_name, args, user_id, applied_at)
      values (${CHAIN_ID}, ${hash(block)}, 0, ${block}, ${hash(block + 1_000)}, ${`0x${'aa'.repeat(20)}`},
        'AnswerUpdated', ${sql.json({ roundId: String(block) })}, null, null)`;
  }
});

afterAll(async () => {
  await services?.close();
});

describe('chain order across a power of ten', () => {
  it('remembered blocks come newest first by number', async () => {
    const blocks = await recentBlocks(services.database.sql, CHAIN_ID, 95n);
    expect(blocks.map((b) => Number(b.number))).toEqual([105, 104, 103, 102, 101, 100, 99, 98, 97, 96, 95]);
  });

  it('events above a block and waiting events come in block order', async () => {
    const sql = services.database.sql;
    expect((await eventsAbove(sql, CHAIN_ID, 97n)).map((e) => Number(e.blockNumber))).toEqual([
      98, 99, 100, 101,
    ]);
    expect((await waitingEvents(sql, CHAIN_ID, 95n, 105n)).map((e) => Number(e.blockNumber))).toEqual([
      98, 99, 100, 101,
    ]);
  });
});
