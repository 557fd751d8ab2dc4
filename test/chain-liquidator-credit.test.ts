// Proves issue 14's done-when on real services (Hardhat node, Postgres, Redis, the indexer following the chain, two in-process hot paths, the liquidator as a real process): a price drop below the warning line is counted, one below a health factor of 1 leaves no credit on every hot path within 1 s of the price transaction (measured), the liquidation lands exactly once across a kill right after its broadcast, credit comes back once the position is healthy, and the indexer, Redis and the ledger agree afterwards.
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indexer } from '../indexer/runtime/index.ts';
import { createLiquidator, type Liquidator } from '../liquidator/index.ts';
import {
  type ChainHarness,
  localAccount,
  ROLES,
  seedAssets,
  seedUser,
  startChainHarness,
} from '../scripts/chain/harness.ts';
import { createTestIndexer, silentLogger, spawnLiquidator } from '../scripts/chain/testing.ts';
import { createSettlementWorker } from '../settlement/index.ts';
import { credanaVaultAbi, writeContractsFile } from '../shared/chain/contracts/index.ts';
import { borrowPower } from '../shared/credit.ts';
import { usdcToCentsCeil } from '../shared/money.ts';
import { ensureAccount, holdingsFromAccount } from '../shared/redis/account.ts';
import { ACCOUNT, userKeys } from '../shared/redis/keys.ts';
import { conservationProblems } from './support/conservation.ts';
import { setUpServices, type TestServices } from './support/db.ts';
import { type HotPath, post, startHotPath } from './support/hot-path.ts';
import { drainOutbox } from './support/reconcile.ts';
import { authorizationEvent, authorizationRequest, transactionEvent } from './support/stripe.ts';

const ETH = 10n ** 18n;
const USDC = 10n ** 6n;
const E8 = 10n ** 8n;
const GWEI = 10n ** 9n;
/** The indexer's poll interval here: the credit deadline below is measured from the mined block. */
const INDEXER_POLL_MS = 200;
const CREDIT_GONE_MS_MAX = 1_000;

let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let following: Promise<void> | null = null;
let hotPaths: HotPath[] = [];
let liquidator: Liquidator;
let contractsFile: string;
let userId: string;
let cardId: string;
let wallet: Address;

const sql = () => services.database.sql;
const nowS = () => Math.floor(Date.now() / 1000);

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Available credit exactly as `hotPath`'s next decision computes it: its in-memory market, the cached account. */
async function availableOn(hotPath: HotPath): Promise<bigint> {
  const account = await services.redis.hgetall(userKeys(services.prefix, userId).account);
  const power = borrowPower({
    holdings: holdingsFromAccount(account),
    assets: hotPath.market.assets,
    prices: hotPath.market.prices,
    nowS: nowS(),
  });
  const limit = BigInt(account[ACCOUNT.creditLimitCents] ?? '0');
  const cap = limit < power.borrowPowerCents ? limit : power.borrowPowerCents;
  return (
    cap -
    usdcToCentsCeil(BigInt(account[ACCOUNT.debtOnchainUsdc] ?? '0')) -
    BigInt(account[ACCOUNT.unsettledCents] ?? '0') -
    BigInt(account[ACCOUNT.holdsCents] ?? '0')
  );
}

async function swipe(hotPath: HotPath, amountCents: number) {
  const request = authorizationRequest({ cardId, amountCents });
  const answer = await post(hotPath, '/stripe/authorizations', request);
  return {
    approved: answer.json.approved === true,
    reason: answer.json.metadata?.reason,
    id: request.data.object.id,
  };
}

const vaultRead = async (functionName: 'debtOf' | 'collateralOf', args: readonly unknown[]) =>
  (await chain.publicClient.readContract({
    address: chain.contracts.vault,
    abi: credanaVaultAbi,
    functionName,
    args,
  } as never)) as bigint;

const liquidatedEvents = async () =>
  (
    await chain.publicClient.getContractEvents({
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      eventName: 'Liquidated',
      fromBlock: 0n,
    })
  ).filter((l) => (l.args.user as string).toLowerCase() === wallet.toLowerCase());

beforeAll(async () => {
  [services, chain] = await Promise.all([setUpServices(), startChainHarness()]);
  await seedAssets(sql(), chain.contracts);
  ({ indexer } = createTestIndexer(services, chain, { confirmations: 2, pollIntervalMs: INDEXER_POLL_MS }));
  contractsFile = join(mkdtempSync(join(tmpdir(), 'credana-liquidator-credit-')), 'contracts.json');
  writeContractsFile(contractsFile, chain.contracts);
  wallet = chain.account(3);
  userId = await seedUser(sql(), { chainId: chain.contracts.chainId, wallet, creditLimitCents: 10_000_000n });
  cardId = `ic_${randomBytes(8).toString('hex')}`;
  await sql()`insert into cards (id, user_id) values (${cardId}, ${userId})`;
  await ensureAccount(services.redis, sql(), services.prefix, userId);
  // Two hot-path processes' worth: each its own connections and market subscription.
  hotPaths = [await startHotPath(services), await startHotPath(services)];
  await chain.fund(chain.account(ROLES.liquidator), 'USDC', 10_000n * USDC);
  liquidator = createLiquidator({
    sql: services.sqlFor('credana_liquidator'),
    client: chain.publicClient,
    account: privateKeyToAccount(localAccount(ROLES.liquidator).privateKey),
    contracts: chain.contracts,
    logger: silentLogger,
    maxFeePerGasWei: 200n * GWEI,
    healthWarningBps: 11_000,
  });
});

afterAll(async () => {
  await indexer?.stop();
  await following?.catch(() => {});
  for (const h of hotPaths) await h.close();
  await chain?.stop();
  await services?.close();
});

describe('a price drop below a health factor of 1', () => {
  it('sets up $2,000 of on-chain debt and a $10 hold against 1 WETH at $3,000', async () => {
    await chain.deposit(wallet, 'WETH', ETH);
    await chain.mine(2);
    await indexer.syncToHead();
    const [a, b] = hotPaths as [HotPath, HotPath];
    // The spend: approved, captured through Stripe's events, booked, then recorded on-chain.
    const spend = await swipe(a, 200_000);
    expect(spend).toMatchObject({ approved: true });
    const created = authorizationEvent({
      type: 'issuing_authorization.created',
      cardId,
      authorizationId: spend.id,
      amountCents: 200_000,
      approved: true,
      status: 'pending',
      requestHistory: 1,
      createdS: nowS(),
    });
    expect((await post(a, '/stripe/events', created)).status).toBe(200);
    const capture = transactionEvent({
      cardId,
      type: 'capture',
      amountCents: 200_000,
      authorizationId: spend.id,
      createdS: nowS(),
      transactionId: `ipi_${randomBytes(8).toString('hex')}`,
    });
    expect((await post(a, '/stripe/events', capture)).status).toBe(200);
    await drainOutbox(services.redis, sql(), services.prefix);
    const settlement = createSettlementWorker({
      sql: services.sqlFor('credana_settlement'),
      client: chain.publicClient,
      account: privateKeyToAccount(localAccount(ROLES.settler).privateKey),
      vault: chain.contracts.vault,
      chainId: chain.contracts.chainId,
      logger: silentLogger,
      maxFeePerGasWei: 200n * GWEI,
    });
    expect(await settlement.runOnce()).toMatchObject({ sent: 1 });
    await indexer.syncToHead();
    expect(await vaultRead('debtOf', [wallet])).toBe(2_000n * USDC);
    // An open hold on the other hot path: only the program knows it.
    expect(await swipe(b, 1_000)).toMatchObject({ approved: true });
    await drainOutbox(services.redis, sql(), services.prefix);
    // $2,400 of borrow power − $2,000 debt − $10 hold.
    expect(await Promise.all(hotPaths.map(availableOn))).toEqual([39_000n, 39_000n]);
    expect(await liquidator.runOnce()).toMatchObject({ checked: 1, warnings: 0, unhealthy: 0, sent: 0 });
  }, 60_000);

  it('counts the account below the warning line (1.10) without liquidating it', async () => {
    following = indexer.run();
    await chain.setPrice('WETH', 2_600n * E8); // threshold value $2,145 / $2,000 on-chain: 1.0725
    await waitFor(
      async () => (await Promise.all(hotPaths.map(availableOn))).every((c) => c === 7_000n),
      'the $2,600 price on both hot paths',
    );
    expect(await liquidator.runOnce()).toMatchObject({ checked: 1, warnings: 1, unhealthy: 0, sent: 0 });
    expect(
      await liquidator.metrics.registry.getSingleMetricAsString('liquidator_health_warning_accounts'),
    ).toMatch(/liquidator_health_warning_accounts 1$/);
  });

  it('leaves no credit on every hot path within 1 s of the price transaction', async () => {
    const startedAt = performance.now();
    await chain.setPrice('WETH', 2_200n * E8); // threshold $1,815 / $2,010 with the hold: 0.90
    const goneAfterMs: number[] = [];
    await Promise.all(
      hotPaths.map(async (hotPath, i) => {
        await waitFor(async () => (await availableOn(hotPath)) <= 0n, `no credit on hot path ${i}`, 5_000);
        goneAfterMs[i] = performance.now() - startedAt;
      }),
    );
    expect(Math.max(...goneAfterMs), `no credit after ${goneAfterMs.map(Math.round)} ms`).toBeLessThan(
      CREDIT_GONE_MS_MAX,
    );
    // What a swipe now gets, on each: a decline, whatever the amount.
    for (const hotPath of hotPaths)
      expect(await swipe(hotPath, 100)).toMatchObject({ approved: false, reason: 'insufficient_credit' });
    await drainOutbox(services.redis, sql(), services.prefix);
  });

  it('is liquidated exactly once across a kill right after the broadcast; credit returns once healthy', async () => {
    const env = {
      DATABASE_URL: services.urlFor('credana_liquidator'),
      CHAIN_RPC_URL: chain.url,
      CHAIN_ID: String(chain.contracts.chainId),
      CONTRACTS_FILE: contractsFile,
      LIQUIDATOR_PRIVATE_KEY: localAccount(ROLES.liquidator).privateKey,
      LOG_LEVEL: 'info',
    };
    const crashed = spawnLiquidator(env, ['--crash-after', 'broadcast', '--poll-interval-ms', '50']);
    expect(await crashed.exited).toBe('SIGKILL');
    expect(await sql()`select status from liquidations`).toEqual([{ status: 'sent' }]);
    const restarted = spawnLiquidator(env, ['--poll-interval-ms', '50']);
    try {
      await waitFor(
        async () => (await sql()`select status from liquidations`).every((r) => r['status'] === 'confirmed'),
        'the liquidation to be followed to its receipt',
      );
      await new Promise((resolve) => setTimeout(resolve, 500)); // more rounds: nothing new
    } finally {
      await restarted.kill('SIGTERM');
    }
    // Health 1,815 / 2,000 on-chain is below 0.95: the whole debt, seized at $2,200 plus the 5 % bonus.
    const seized = 954_545_454_545_454_545n;
    expect(await liquidatedEvents()).toHaveLength(1);
    expect(
      await sql()`select debt_covered_usdc::text, collateral_seized_base::text from liquidations`,
    ).toEqual([{ debt_covered_usdc: (2_000n * USDC).toString(), collateral_seized_base: seized.toString() }]);
    expect(await vaultRead('debtOf', [wallet])).toBe(0n);
    const collateral = await vaultRead('collateralOf', [wallet, chain.token('WETH')]);
    expect(collateral).toBe(ETH - seized);

    // Healthy again: $100.00 of WETH left, $80.00 of borrow power, the $10 hold: $70 on every hot path.
    await waitFor(
      async () => (await Promise.all(hotPaths.map(availableOn))).every((c) => c === 7_000n),
      'the liquidation on both hot paths',
    );
    for (const hotPath of hotPaths)
      expect(await swipe(hotPath, 500)).toMatchObject({ approved: true, reason: 'approved' });
    expect(await liquidator.runOnce()).toMatchObject({ unhealthy: 0, sent: 0 });
  }, 90_000);

  it('leaves the indexer, Redis and the ledger in agreement', async () => {
    await indexer.stop();
    await following;
    following = null;
    await indexer.syncToHead();
    await drainOutbox(services.redis, sql(), services.prefix);
    const collateral = await vaultRead('collateralOf', [wallet, chain.token('WETH')]);
    const [account] =
      await sql()`select debt_onchain_usdc::text as debt from credit_accounts where user_id = ${userId}`;
    const [position] =
      await sql()`select collateral_base::text from positions where user_id = ${userId} and asset_id = 'WETH'`;
    expect(account?.['debt']).toBe('0');
    expect(position?.['collateral_base']).toBe(collateral.toString());
    const cached = await services.redis.hgetall(userKeys(services.prefix, userId).account);
    expect(cached[ACCOUNT.debtOnchainUsdc]).toBe('0');
    expect(cached[`${ACCOUNT.collateralPrefix}WETH`]).toBe(collateral.toString());
    expect(await conservationProblems(sql(), services.redis, services.prefix, [userId])).toEqual([]);
    // The liquidation is one balanced transfer in the books, and the user's on-chain debt account is 0 again.
    const transfers = await sql()`select count(*)::int as n from ledger_transfers
      where user_id = ${userId} and kind = 'liquidation'`;
    expect(transfers[0]?.['n']).toBe(1);
    const [debt] = await sql()`select coalesce(sum(amount_cents), 0)::text as cents from ledger_entries
      where user_id = ${userId} and account = 'user_debt_onchain'`;
    expect(debt?.['cents']).toBe('0');
  });
});
