// Proves oracle sanity on a real Hardhat chain, Postgres, Redis and two in-process market views (what every hot-path process decides with): a spiking, an out-of-bounds and a future-stamped round never raise credit, a drop cuts it at once, and a price round orphaned by a real reorg leaves every market.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indexer } from '../indexer/runtime/index.ts';
import {
  type ChainHarness,
  DEFAULT_RISK,
  seedAssets,
  seedUser,
  startChainHarness,
} from '../scripts/chain/harness.ts';
import { cachedCredit, createTestIndexer } from '../scripts/chain/testing.ts';
import { computeCredit } from '../shared/credit.ts';
import { ensureAccount, holdingsFromAccount } from '../shared/redis/account.ts';
import type { Redis } from '../shared/redis/client.ts';
import { ACCOUNT, channels, userKeys } from '../shared/redis/keys.ts';
import { createMarket, type Market } from '../shared/redis/market.ts';
import { publishToAll } from '../shared/redis/pubsub.ts';
import { connectRedis, setUpServices, type TestServices } from './support/db.ts';

const CONFIRMATIONS = 2;
const REORG_DEPTH_MAX = 8;
const ETH = 10n ** 18n;
const E8 = 10n ** 8n;
/** WETH's feed for this file: deviation 30 %, bounds $1..$1,000,000, future skew 45 s. */
const WETH_RISK = {
  ...(DEFAULT_RISK['WETH'] as NonNullable<(typeof DEFAULT_RISK)['WETH']>),
  priceFutureSkewS: 45,
};

let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let userId: string;
const markets: Market[] = [];
const connections: Redis[] = [];

const nowS = () => Math.floor(Date.now() / 1000);

/** The credit a hot-path process would compute from its in-memory market and the cached account. */
async function marketCredit(market: Market): Promise<bigint> {
  const account = await services.redis.hgetall(userKeys(services.prefix, userId).account);
  return computeCredit({
    holdings: holdingsFromAccount(account),
    assets: market.assets,
    prices: market.prices,
    nowS: nowS(),
    debtOnchainUsdc: BigInt(account[ACCOUNT.debtOnchainUsdc] ?? '0'),
    unsettledCents: BigInt(account[ACCOUNT.unsettledCents] ?? '0'),
    holdsCents: BigInt(account[ACCOUNT.holdsCents] ?? '0'),
    creditLimitCents: BigInt(account[ACCOUNT.creditLimitCents] ?? '0'),
  }).borrowPowerCents;
}

/** Borrow power as every market view and the Redis hash see it (after pub/sub has delivered). */
async function borrowPowers(): Promise<bigint[]> {
  // A marker published after the indexer's last message: once every view has it, they have all before it.
  const marker = `marker-${Math.random()}`;
  await publishToAll(
    services.redis,
    channels(services.prefix).prices,
    JSON.stringify({ assetId: marker, answer: '1', updatedAtS: 0 }),
  );
  await waitUntil(() => markets.every((m) => m.prices.has(marker)));
  for (const m of markets) m.prices.delete(marker);
  const hashed = await cachedCredit(
    services.redis,
    services.database.sql,
    services.prefix,
    chain.contracts.chainId,
    userId,
    nowS(),
  );
  return [...(await Promise.all(markets.map(marketCredit))), hashed.borrowPowerCents];
}

/** 1 WETH at `priceUsd` × 80 % LTV, in cents. */
const powerAt = (priceUsd: bigint) => priceUsd * 80n;

const heldMetric = () => indexer.metrics.registry.getSingleMetricAsString('indexer_oracle_rounds_held_total');

beforeAll(async () => {
  [services, chain] = await Promise.all([setUpServices(), startChainHarness()]);
  const sql = services.database.sql;
  await seedAssets(sql, chain.contracts, { ...DEFAULT_RISK, WETH: WETH_RISK });
  const wallet = chain.account(3);
  userId = await seedUser(sql, { chainId: chain.contracts.chainId, wallet, creditLimitCents: 100_000_000n });
  await ensureAccount(services.redis, sql, services.prefix, userId);
  ({ indexer } = createTestIndexer(services, chain, {
    confirmations: CONFIRMATIONS,
    reorgDepthMax: REORG_DEPTH_MAX,
  }));
  await chain.deposit(wallet, 'WETH', 1n * ETH);
  await chain.mine(CONFIRMATIONS);
  await indexer.syncToHead();
  // Two hot-path processes' market views, each with its own connections.
  for (let i = 0; i < 2; i++) {
    const redis = connectRedis(services, { connectionName: `oracle-test-${i}` });
    const subscriber = connectRedis(services, {
      connectionName: `oracle-test-sub-${i}`,
      shardedSubscriber: true,
    });
    connections.push(redis, subscriber);
    markets.push(await createMarket(redis, subscriber, services.prefix));
  }
  expect(await borrowPowers()).toEqual([powerAt(3_000n), powerAt(3_000n), powerAt(3_000n)]);
});

afterAll(async () => {
  await indexer?.stop();
  for (const m of markets) m.close();
  for (const c of connections) c.disconnect();
  await chain?.stop();
  await services?.close();
});

describe('rounds that must not raise credit', () => {
  it('holds a spike (a rise beyond the deviation bound) even after its confirmations; a following round confirms it', async () => {
    await chain.setPrice('WETH', 4_500n * E8); // +50 % over $3,000, the bound is 30 %
    await chain.mine(CONFIRMATIONS);
    await indexer.syncToHead();
    expect(await borrowPowers()).toEqual([powerAt(3_000n), powerAt(3_000n), powerAt(3_000n)]);
    expect(await heldMetric()).toContain('asset="WETH",reason="spike"} 1');

    // A second round at about the same level is the confirmation a genuine jump gets; it is a rise,
    // so it still waits for its own confirmations.
    await chain.setPrice('WETH', 4_600n * E8);
    await indexer.syncToHead();
    expect(await borrowPowers()).toEqual([powerAt(3_000n), powerAt(3_000n), powerAt(3_000n)]);
    await chain.mine(CONFIRMATIONS);
    await indexer.syncToHead();
    expect(await borrowPowers()).toEqual([powerAt(4_600n), powerAt(4_600n), powerAt(4_600n)]);
  });

  it('applies a drop of any size at first sight', async () => {
    await chain.setPrice('WETH', 2_000n * E8); // −57 %, no further block
    await indexer.syncToHead();
    expect(await borrowPowers()).toEqual([powerAt(2_000n), powerAt(2_000n), powerAt(2_000n)]);
  });

  it('counts the asset as worth zero on a round above the feed’s maxAnswer, until a sane round is confirmed', async () => {
    await chain.setPrice('WETH', 2_000_000n * E8); // above the $1,000,000 bound
    await chain.mine(CONFIRMATIONS);
    await indexer.syncToHead();
    expect(await borrowPowers()).toEqual([0n, 0n, 0n]);
    expect(await heldMetric()).toContain('asset="WETH",reason="out_of_bounds"} 1');

    await chain.setPrice('WETH', 2_100n * E8);
    await indexer.syncToHead();
    expect(await borrowPowers()).toEqual([0n, 0n, 0n]); // back from zero is a rise: it waits
    await chain.mine(CONFIRMATIONS);
    await indexer.syncToHead();
    expect(await borrowPowers()).toEqual([powerAt(2_100n), powerAt(2_100n), powerAt(2_100n)]);
  });
});

describe('a reorg', () => {
  it('removes an orphaned, applied price round from every hot-path market', async () => {
    const snapshot = await chain.snapshot();
    // The orphan is stamped after the canonical round in force (Hardhat may give blocks one second).
    const head = await chain.publicClient.getBlock({ blockTag: 'latest' });
    await chain.testClient.setNextBlockTimestamp({ timestamp: head.timestamp + 2n });
    await chain.setPrice('WETH', 2_300n * E8);
    await chain.mine(CONFIRMATIONS);
    await indexer.syncToHead();
    expect(await borrowPowers()).toEqual([powerAt(2_300n), powerAt(2_300n), powerAt(2_300n)]);
    expect(markets.map((m) => m.prices.get('WETH')?.answer)).toEqual([2_300n * E8, 2_300n * E8]);

    await chain.revert(snapshot);
    await chain.mine(CONFIRMATIONS + 2); // a longer canonical fork without that round
    await indexer.syncToHead();
    const [audit] = await services.database
      .sql`select data from audit_log where action = 'chain_reorg' order by id desc limit 1`;
    expect(audit?.['data']).toMatchObject({ undoneEvents: 1 });
    expect(await borrowPowers()).toEqual([powerAt(2_100n), powerAt(2_100n), powerAt(2_100n)]);
    expect(markets.map((m) => m.prices.get('WETH')?.answer)).toEqual([2_100n * E8, 2_100n * E8]);
  });
});

describe('a round stamped in the future', () => {
  // Last in the file: every later block of this chain is stamped at least as far ahead.
  it('does not raise credit when stamped beyond the asset’s skew (45 s), even within 60 s', async () => {
    const head = await chain.publicClient.getBlock({ blockTag: 'latest' });
    expect(Number(head.timestamp) - nowS()).toBeLessThan(30); // the test chain has not drifted ahead
    await chain.testClient.setNextBlockTimestamp({ timestamp: BigInt(nowS() + 58) });
    await chain.setPrice('WETH', 2_200n * E8); // within the deviation bound: only its stamp is wrong
    await chain.mine(CONFIRMATIONS);
    await indexer.syncToHead();
    const powers = await borrowPowers();
    for (const power of powers) expect(power).toBeLessThanOrEqual(powerAt(2_100n));
    expect(powers).toEqual([0n, 0n, 0n]);
    expect(await heldMetric()).toContain('asset="WETH",reason="future"} 1');
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
