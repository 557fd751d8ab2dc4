// Proves credit shrinks fast and grows slow on a real Hardhat chain, Postgres and Redis: a deposit
// counts only after N confirmations, a withdrawal request and a price drop count at first sight (a
// real hot-path decision right after declines), a rise waits, and a silent feed goes stale by time.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indexer } from '../indexer/runtime/index.ts';
import { type ChainHarness, seedAssets, seedUser, startChainHarness } from '../scripts/chain/harness.ts';
import { cachedCredit, createTestIndexer } from '../scripts/chain/testing.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import { ACCOUNT, userKeys } from '../shared/redis/keys.ts';
import { setUpServices, type TestServices } from './support/db.ts';
import { type HotPath, post, startHotPath } from './support/hot-path.ts';
import { authorizationRequest } from './support/stripe.ts';

const CONFIRMATIONS = 3;
const ETH = 10n ** 18n;
const E8 = 10n ** 8n;

let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let hotPath: HotPath;
let userId: string;
let cardId: string;
let wallet: `0x${string}`;

const nowS = () => Math.floor(Date.now() / 1000);
const account = () => services.redis.hgetall(userKeys(services.prefix, userId).account);
const credit = (at = nowS()) =>
  cachedCredit(services.redis, services.database.sql, services.prefix, chain.contracts.chainId, userId, at);
const swipe = async (amountCents: number) => {
  const res = await post(hotPath, '/stripe/authorizations', authorizationRequest({ cardId, amountCents }));
  expect(res.status).toBe(200);
  return res.json;
};

beforeAll(async () => {
  [services, chain] = await Promise.all([setUpServices(), startChainHarness()]);
  const sql = services.database.sql;
  await seedAssets(sql, chain.contracts);
  wallet = chain.account(3);
  userId = await seedUser(sql, { chainId: chain.contracts.chainId, wallet, creditLimitCents: 10_000_000n });
  cardId = `ic_${randomBytes(8).toString('hex')}`;
  await sql`insert into cards (id, user_id) values (${cardId}, ${userId})`;
  await ensureAccount(services.redis, sql, services.prefix, userId);
  ({ indexer } = createTestIndexer(services, chain, { confirmations: CONFIRMATIONS }));
  await indexer.syncToHead(); // the feeds' initial rounds, published to the market
  hotPath = await startHotPath(services);
});

afterAll(async () => {
  await indexer?.stop();
  await hotPath?.close();
  await chain?.stop();
  await services?.close();
});

describe('confirmations', () => {
  it('counts a deposit only once it has the configured confirmations', async () => {
    const block = await chain.deposit(wallet, 'WETH', 1n * ETH);
    await indexer.syncToHead();
    // Seen and stored, but not applied: no collateral yet, in Postgres or Redis.
    const [stored] = await services.database.sql`
      select applied_at from chain_events where event_name = 'Deposited' and block_number = ${block.toString()}`;
    expect(stored).toBeDefined();
    expect(stored?.['applied_at']).toBeNull();
    expect((await account())[`${ACCOUNT.collateralPrefix}WETH`]).toBeUndefined();
    expect((await swipe(1_000)).approved).toBe(false);

    for (let mined = 1; mined < CONFIRMATIONS - 1; mined++) {
      await chain.mine(1);
      await indexer.syncToHead();
      expect((await account())[`${ACCOUNT.collateralPrefix}WETH`]).toBeUndefined();
    }
    await chain.mine(1); // the deposit's block now has CONFIRMATIONS confirmations
    await indexer.syncToHead();
    expect((await account())[`${ACCOUNT.collateralPrefix}WETH`]).toBe(ETH.toString());
    const [position] = await services.database.sql`
      select collateral_base::text from positions where user_id = ${userId} and asset_id = 'WETH'`;
    expect(position?.['collateral_base']).toBe(ETH.toString());
    // 1 WETH × $3,000 × 80 % LTV.
    expect((await credit()).availableCents).toBe(240_000n);
    expect((await swipe(10_000)).approved).toBe(true);
  });
});

describe('credit shrinks at first sight', () => {
  it('drops credit at once on a withdrawal request, so a swipe right after is declined', async () => {
    // $2,400 power − $100 hold = $2,300 available: a $1,500 swipe would pass before the request.
    expect((await credit()).availableCents).toBe(230_000n);
    await chain.requestWithdrawal(wallet, 'WETH', ETH / 2n);
    await indexer.syncToHead(); // no further blocks mined: first sight
    expect((await account())[`${ACCOUNT.pendingWithdrawalPrefix}WETH`]).toBe((ETH / 2n).toString());
    expect((await credit()).availableCents).toBe(110_000n);
    const declined = await swipe(150_000);
    expect(declined.approved).toBe(false);
    expect(declined.metadata?.reason).toBe('insufficient_credit');
  });

  it('uses a price drop in the very next decision, and holds a rise until confirmed', async () => {
    await chain.setPrice('WETH', 2_000n * E8);
    await indexer.syncToHead();
    const [price] = await services.database.sql`
      select answer::text from prices where asset_id = 'WETH' order by updated_at desc, round_id desc limit 1`;
    expect(price?.['answer']).toBe((2_000n * E8).toString());
    // The hot path learns prices by pub/sub; wait for the message, then decide.
    await waitUntil(() => hotPath.market.prices.get('WETH')?.answer === 2_000n * E8);
    // 0.5 WETH × $2,000 × 80 % = $800, minus the $100 hold: $700. At $3,000 it was $1,100.
    expect((await credit()).availableCents).toBe(70_000n);
    expect((await swipe(80_000)).approved).toBe(false);
    expect((await swipe(60_000)).approved).toBe(true);

    await chain.setPrice('WETH', 2_500n * E8);
    await indexer.syncToHead();
    expect((await credit()).availableCents).toBe(10_000n); // still $2,000: a rise waits
    await chain.mine(CONFIRMATIONS - 1);
    await indexer.syncToHead();
    // 0.5 × $2,500 × 80 % = $1,000 − $700 in holds.
    expect((await credit()).availableCents).toBe(30_000n);
  });

  it('judges a feed that stops updating by time at decision time (no event ever says it is stale)', async () => {
    const [row] = await services.database.sql`
      select extract(epoch from updated_at)::bigint as s from prices where asset_id = 'WETH'
      order by updated_at desc limit 1`;
    const updatedAtS = Number(row?.['s']);
    const fresh = await credit(updatedAtS + 3_900);
    const stale = await credit(updatedAtS + 3_901);
    expect(fresh.staleAssetIds).toEqual([]);
    expect(stale.staleAssetIds).toEqual(['WETH']);
    expect(stale.borrowPowerCents).toBe(0n);
    expect(stale.availableCents).toBeLessThan(0n);
  });
});

describe('liquidation', () => {
  it('applies at first sight, bringing in the user’s waiting deposit first so nothing goes below zero', async () => {
    const sql = services.database.sql;
    const other = chain.account(4);
    const otherId = await seedUser(sql, { chainId: chain.contracts.chainId, wallet: other });
    await ensureAccount(services.redis, sql, services.prefix, otherId);
    const USDC = 10n ** 6n;
    // 1 WETH at $2,500 × 82.5 % = $2,062.50 < $2,100: liquidatable (the vault checks it itself).
    await chain.recordSpendAsSettler(other, 2_100n * USDC, `ipi_${randomBytes(6).toString('hex')}`);
    await chain.fund(chain.account(2), 'USDC', 2_100n * USDC);
    await chain.fund(other, 'WETH', ETH);
    await chain.depositOnly(other, 'WETH', ETH);
    await indexer.syncToHead();
    const [waiting] =
      await sql`select applied_at from chain_events where event_name = 'Deposited' and args->>'user' = ${other}`;
    expect(waiting?.['applied_at']).toBeNull(); // the deposit waits for its confirmations…
    await chain.liquidate(other, 'WETH', ETH / 2n, 2_100n * USDC);
    await indexer.syncToHead(); // …but the liquidation, one block later, cannot wait, and takes it along
    const [position] = await sql`
      select collateral_base::text as c from positions where user_id = ${otherId} and asset_id = 'WETH'`;
    expect(position?.['c']).toBe((ETH / 2n).toString());
    const [credit] =
      await sql`select debt_onchain_usdc::text as d from credit_accounts where user_id = ${otherId}`;
    expect(credit?.['d']).toBe('0');
    const cached = await services.redis.hgetall(userKeys(services.prefix, otherId).account);
    expect(cached[`${ACCOUNT.collateralPrefix}WETH`]).toBe((ETH / 2n).toString());
    expect(cached[ACCOUNT.debtOnchainUsdc]).toBe('0');
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
