// Proves the outbox and indexer-head commands on the real stack: real hot-path decisions fill the outbox streams, and `outbox` reports them per shard with the writer's pending count and the writer lag, then nothing once drained; `indexer-head` (run as `npm run ops` would, against a local Hardhat chain) reports each cursor's distance to the chain head and a cursor of another chain, and an RPC that does not answer is one line with exit 1 that never shows the RPC URL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONSUMER_GROUP, streamIdMs } from '../../ledger-writer/writer.ts';
import { deadLetterKey, OUTBOX_SHARDS, outboxKey, shardOf } from '../../shared/redis/keys.ts';
import { redisEnv } from '../../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPathWorld, post, setUpHotPathWorld, WETH_PRICE_E8 } from '../../test/support/hot-path.ts';
import { freePort, runScript } from '../../test/support/processes.ts';
import { drainOutbox } from '../../test/support/reconcile.ts';
import { authorizationRequest } from '../../test/support/stripe.ts';
import { type LocalChain, startLocalChain } from '../chain/node.ts';
import { type BacklogDeps, backlogCommands, WRITER_GROUP } from './backlog.ts';

let world: HotPathWorld;
let chain: LocalChain;

beforeAll(async () => {
  [world, chain] = await Promise.all([setUpHotPathWorld(), startLocalChain()]);
});

afterAll(async () => {
  await chain?.stop();
  await world?.close();
});

async function ops(deps: BacklogDeps, name: string, ...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const command = backlogCommands({ deps: async () => deps }).find((c) => c.name === name);
  if (command === undefined) throw new Error(`no command ${name}`);
  const code = await command.run(args, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

describe('outbox', () => {
  it("reads the ledger writer's own consumer group", () => {
    expect(WRITER_GROUP).toBe(CONSUMER_GROUP);
  });

  it('reports entries, pending and lag per shard, and nothing once the writer has written them', async () => {
    const { services, hotPath } = world;
    const { redis, prefix } = services;
    const sql = services.database.sql;
    const user = await seedUser(sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
    });
    for (const amountCents of [100, 200, 300]) {
      const res = await post(
        hotPath,
        '/stripe/authorizations',
        authorizationRequest({ cardId: user.cardId, amountCents }),
      );
      expect(res.json.approved).toBe(true);
    }
    const shard = shardOf(user.userId);
    const stream = outboxKey(prefix, shard);
    // Each decision made from Redis appended one entry (one the loaded machine sent to the Postgres
    // fallback appends none): the command must report exactly what the stream holds.
    const n = await redis.xlen(stream);
    expect(n).toBeGreaterThanOrEqual(1);
    const first = (await redis.xrange(stream, '-', '+', 'COUNT', 1)) as [string, string[]][];
    const oldestMs = streamIdMs(first[0]?.[0] ?? '');
    expect(oldestMs).toBeGreaterThan(0);
    const deps: BacklogDeps = {
      sql,
      redis,
      prefix,
      chainHead: async () => ({ chainId: 31337, blockNumber: 0n }),
      now: () => oldestMs + 5_000,
    };

    // No writer has run: no group anywhere.
    const before = await ops(deps, 'outbox');
    expect({ code: before.code, err: before.err }).toEqual({ code: 0, err: [] });
    expect(before.out).toEqual([
      `outbox: ${n} entries not yet written to Postgres in ${OUTBOX_SHARDS} shards, 0 delivered to a writer and not acknowledged`,
      `writer lag: 5s (5000 ms; oldest entry in shard ${shard})`,
      `no ledger writer group on ${OUTBOX_SHARDS} shard(s): no writer has started there`,
      'dead letters: 0',
      'shard\tentries\tpending\toldest_age',
      `${String(shard).padStart(2, '0')}\t${n}\t-\t5s`,
    ]);

    // A writer took two entries and has not acknowledged them (killed mid-batch, say).
    for (let s = 0; s < OUTBOX_SHARDS; s++)
      await redis.xgroup('CREATE', outboxKey(prefix, s), CONSUMER_GROUP, '0', 'MKSTREAM');
    const read = (await redis.xreadgroup(
      'GROUP',
      CONSUMER_GROUP,
      'writer-1',
      'COUNT',
      2,
      'STREAMS',
      stream,
      '>',
    )) as [string, [string, string[]][]][];
    const takenIds = read[0]?.[1].map(([id]) => id) ?? [];
    expect(takenIds).toHaveLength(Math.min(2, n));
    await redis.xadd(deadLetterKey(prefix), '*', 'e', 'test');
    const taken = await ops(deps, 'outbox', '--all');
    expect(taken.out[0]).toBe(
      `outbox: ${n} entries not yet written to Postgres in ${OUTBOX_SHARDS} shards, ${takenIds.length} delivered to a writer and not acknowledged`,
    );
    expect(taken.out).not.toContain(
      `no ledger writer group on ${OUTBOX_SHARDS} shard(s): no writer has started there`,
    );
    expect(taken.out).toContain('dead letters: 1 (npm run ops -- dead-letters)');
    expect(taken.out.filter((l) => /^\d+\t/.test(l))).toHaveLength(OUTBOX_SHARDS);
    expect(taken.out).toContain(`${String(shard).padStart(2, '0')}\t${n}\t${takenIds.length}\t5s`);

    // The writer writes them and acknowledges (XACK + XDEL) as it does after a commit.
    await drainOutbox(redis, sql, prefix);
    await redis.xack(stream, CONSUMER_GROUP, ...takenIds);
    const after = await ops(deps, 'outbox');
    expect(after.out.slice(0, 2)).toEqual([
      `outbox: 0 entries not yet written to Postgres in ${OUTBOX_SHARDS} shards, 0 delivered to a writer and not acknowledged`,
      'writer lag: 0s (nothing waiting)',
    ]);

    const bad = await ops(deps, 'outbox', 'extra');
    expect({ code: bad.code, lines: bad.err.length, out: bad.out }).toEqual({ code: 2, lines: 1, out: [] });
  });
});

describe('indexer-head', () => {
  const env = (rpcUrl: string) => ({
    PATH: process.env['PATH'] ?? '',
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATABASE_URL: world.services.databaseUrl,
    ...redisEnv(world.services),
    REDIS_KEY_PREFIX: world.services.prefix,
    CHAIN_RPC_URL: rpcUrl,
  });

  it('reports each cursor against the chain head, and an RPC that does not answer without its URL', async () => {
    const sql = world.services.database.sql;
    // Five blocks on the chain; the indexer committed block 2.
    const mined = await fetch(chain.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'hardhat_mine', params: ['0x5'] }),
    });
    expect(mined.ok).toBe(true);
    await sql`insert into indexer_cursors (id, chain_id, block_number, block_hash)
      values ('31337:0xvault', 31337, 2, ${`0x${'12'.repeat(32)}`}), ('1:0xother', 1, 20000000, ${`0x${'34'.repeat(32)}`})`;

    const run = await runScript('scripts/ops.ts', ['indexer-head'], env(chain.url));
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    const lines = run.stdout.trim().split('\n');
    expect(lines[0]).toBe('chain head: block 5 on chain 31337');
    expect(lines[1]).toMatch(
      /^indexer 1:0xother: block 20000000 on chain 1, committed \d+s ago; this cursor is for chain 1, the RPC serves chain 31337$/,
    );
    expect(lines[2]).toMatch(
      /^indexer 31337:0xvault: block 2 on chain 31337, committed \d+s ago; 3 block\(s\) behind the head$/,
    );

    // Nothing listens there; the URL carries a key in its path, as hosted RPC URLs do.
    const port = await freePort();
    const down = await runScript(
      'scripts/ops.ts',
      ['indexer-head'],
      env(`http://127.0.0.1:${port}/v2/sk_rpc_key_do_not_print`),
    );
    expect(down.code).toBe(1);
    expect(down.stdout.split('\n')[0]).toMatch(/^chain head: unknown \(the RPC did not answer: /);
    expect(down.stdout + down.stderr).not.toContain('sk_rpc_key_do_not_print');
    expect(down.stdout).toContain('indexer 31337:0xvault: block 2 on chain 31337');
  }, 120_000); // child processes under tsx: ~15 s each on the shared 2-core machine
});
