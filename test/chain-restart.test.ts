// Proves the indexer resumes exactly: a real indexer process SIGKILLed inside a range's transaction,
// then at a random moment, and restarted stores every log once (no gap, no duplicate); RPC failures
// injected by a proxy mid-range are retried; both end equal to an undisturbed index of the chain.
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChainHarness, seedAssets, seedUser, startChainHarness } from '../scripts/chain/harness.ts';
import {
  cachedChainState,
  createTestIndexer,
  indexedState,
  spawnIndexer,
  startFlakyProxy,
} from '../scripts/chain/testing.ts';
import { writeContractsFile } from '../shared/chain/contracts/index.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import { redisEnv, setUpServices, type TestServices } from './support/db.ts';

const ETH = 10n ** 18n;
const REORG_DEPTH_MAX = 4;
const TXS = 80;
const EVENTS_PER_TX = 20;

let chain: ChainHarness;
let reference: TestServices;
const userIds: string[] = [];
const linked: Address[] = [];
const everyone: Address[] = [];
let head: bigint;

async function seed(target: TestServices): Promise<void> {
  const sql = target.database.sql;
  await seedAssets(sql, chain.contracts);
  for (let i = 0; i < linked.length; i++) {
    await seedUser(sql, {
      chainId: chain.contracts.chainId,
      userId: userIds[i] as string,
      wallet: linked[i] as Address,
    });
    await ensureAccount(target.redis, sql, target.prefix, userIds[i] as string);
  }
}

async function expectSameAsReference(target: TestServices): Promise<void> {
  expect(await indexedState(target.database.sql)).toEqual(await indexedState(reference.database.sql));
  expect(await cachedChainState(target.redis, target.prefix, userIds)).toEqual(
    await cachedChainState(reference.redis, reference.prefix, userIds),
  );
}

const cursorOf = async (target: TestServices): Promise<bigint> => {
  const [row] = await target.database.sql`select block_number::text from indexer_cursors`;
  return row === undefined ? -1n : BigInt(row['block_number'] as string);
};

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

beforeAll(async () => {
  [chain, reference] = await Promise.all([startChainHarness({ withBatcher: true }), setUpServices()]);
  for (let i = 0; i < 40; i++)
    everyone.push(`0x${(0xc0ffee00 + i).toString(16).padStart(40, '0')}` as Address);
  for (let i = 0; i < 12; i++) {
    linked.push(everyone[i * 3] as Address); // the rest stay unlinked: stored, moving no one's credit
    userIds.push(randomUUID());
  }
  for (let tx = 0; tx < TXS; tx++) {
    const users = Array.from(
      { length: EVENTS_PER_TX },
      (_, i) => everyone[(tx * 7 + i) % everyone.length] as Address,
    );
    const amounts = users.map((_, i) => BigInt(tx + 1) * ETH + BigInt(i));
    await chain.depositMany(tx % 2 === 0 ? 'WETH' : 'WBTC', users, amounts);
    if (tx % 10 === 0) await chain.setPrice('WETH', (3_000n - BigInt(tx)) * 10n ** 8n);
  }
  head = await chain.mine(3);
  await seed(reference);
  const { indexer } = createTestIndexer(reference, chain, { reorgDepthMax: REORG_DEPTH_MAX });
  await indexer.syncToHead();
}, 120_000);

afterAll(async () => {
  await chain?.stop();
  await reference?.close();
});

describe('restart', () => {
  it('resumes after SIGKILL mid-backfill without gap or duplicate', async () => {
    const services = await setUpServices();
    try {
      await seed(services);
      const dir = mkdtempSync(join(tmpdir(), 'credana-chain-'));
      const contractsFile = join(dir, 'contracts.json');
      writeContractsFile(contractsFile, chain.contracts);
      const env = {
        DATABASE_URL: services.urlFor('credana_indexer'),
        ...redisEnv(services),
        REDIS_KEY_PREFIX: services.prefix,
        CHAIN_RPC_URL: chain.url,
        CHAIN_ID: String(chain.contracts.chainId),
        CONTRACTS_FILE: contractsFile,
        CHAIN_CONFIRMATIONS: '2',
        REORG_DEPTH_MAX: String(REORG_DEPTH_MAX),
      };
      const flags = ['--block-range-max', '2', '--poll-interval-ms', '50'];
      const start = BigInt(chain.contracts.deployBlock);
      // First: killed inside a range's transaction, after its writes and before COMMIT.
      const crashed = spawnIndexer(env, [...flags, '--crash-in-range', '12']);
      expect(await crashed.exited).toBe('SIGKILL');
      expect(crashed.output()).toContain('crash fault injected mid-range');
      const afterCrash = await cursorOf(services);
      const [beyond] = await services.database.sql`
        select count(*)::int as n from chain_events where block_number > ${afterCrash.toString()}::bigint`;
      expect(beyond?.['n']).toBe(0); // the interrupted range left nothing behind
      expect(afterCrash).toBeGreaterThan(start);
      // Then: killed from outside at an arbitrary moment of a later backfill.
      const target = start + BigInt(Math.floor(Number(head - start) * 0.6));
      const child = spawnIndexer(env, flags);
      await waitFor(async () => (await cursorOf(services)) >= target, `cursor ≥ ${target}`);
      await child.kill('SIGKILL');
      const killedAt = await cursorOf(services);
      expect(killedAt).toBeGreaterThan(afterCrash);
      expect(killedAt).toBeLessThan(head);

      const last = spawnIndexer(env, flags);
      await waitFor(async () => (await cursorOf(services)) === head, 'the cursor to reach the head');
      await last.kill('SIGTERM');
      expect(await last.exited).toBe(0);

      // Every log of the vault and the feeds is stored exactly once.
      const { indexer } = createTestIndexer(services, chain, { reorgDepthMax: REORG_DEPTH_MAX });
      const logs = await indexer.sync.getDecodedLogs(start, head);
      expect(logs.length).toBeGreaterThanOrEqual(TXS * EVENTS_PER_TX);
      const rows = await services.database
        .sql`select block_hash, log_index from chain_events order by block_number, log_index`;
      expect(rows.map((r) => `${r['block_hash']}:${r['log_index']}`)).toEqual(
        logs.map((l) => `${l.blockHash}:${l.logIndex}`),
      );
      await expectSameAsReference(services);
    } finally {
      await services.close();
    }
  }, 120_000);

  it('retries RPC errors injected mid-range and ends equal to an undisturbed index', async () => {
    const services = await setUpServices();
    const proxy = await startFlakyProxy(chain.url, {
      eth_getLogs: 3,
      eth_getBlockByNumber: 4,
      eth_blockNumber: 5,
    });
    try {
      await seed(services);
      const { indexer, rpc } = createTestIndexer(services, chain, {
        rpcUrl: proxy.url,
        reorgDepthMax: REORG_DEPTH_MAX,
        blockRangeInitial: 3,
        blockRangeMax: 3,
      });
      await indexer.syncToHead();
      const injected = [...proxy.failures.values()].reduce((a, b) => a + b, 0);
      expect(proxy.failures.get('eth_getLogs')).toBeGreaterThanOrEqual(10);
      expect(injected).toBeGreaterThanOrEqual(20);
      expect(rpc.stats.retries).toBe(injected);
      expect(rpc.stats.failures).toBe(0);
      await expectSameAsReference(services);
    } finally {
      await proxy.stop();
      await services.close();
    }
  }, 60_000);
});
