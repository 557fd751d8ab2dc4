// Proves the liquidator liquidates an account below a health factor of 1 exactly once on real services
// (Hardhat node, Postgres, indexer, the liquidator as a real process): killed right after broadcasting,
// restarted, the liquidation is followed, never repeated; healthy accounts are left alone. And across a
// real reorg (evm_snapshot, liquidate, evm_revert), before and after its confirmations: the orphaned
// liquidation does not stay confirmed, the account is not liquidated again while it may be re-mined,
// the shortfall is liquidated once with the orphaned one's nonce, and the counters say so. And the L3
// race (docs/chaos.md): a price that only a reorged-away branch had, still in force in the indexer, does
// not get a healthy account liquidated (the liquidator re-reads the chain before signing); and when the
// price recovers on the chain after the liquidator signed, before its transaction is mined, the vault
// reverts it (AccountHealthy), the row is `failed`, the user keeps the collateral.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address, Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indexer } from '../indexer/runtime/index.ts';
import { createLiquidator, type LiquidatorOptions } from '../liquidator/index.ts';
import { createLiquidatorMetrics } from '../liquidator/metrics.ts';
import {
  type ChainHarness,
  localAccount,
  ROLES,
  seedAssets,
  seedUser,
  startChainHarness,
} from '../scripts/chain/harness.ts';
import { createTestIndexer, silentLogger, spawnLiquidator } from '../scripts/chain/testing.ts';
import { credanaVaultAbi, mockAggregatorAbi, writeContractsFile } from '../shared/chain/contracts/index.ts';
import { setUpServices, type TestServices } from './support/db.ts';

const ETH = 10n ** 18n;
const USDC = 10n ** 6n;
let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let contractsFile: string;
const sql = () => services.database.sql;

/** A 2-block confirmation depth and the indexer's reorg window, for the tests that reorg. */
const REORG_AWARE = { confirmations: 2, reorgDepthMax: 16 } as const;

/** The liquidator in this process, as the liquidator role; `extra` adds options. */
function liquidatorInProcess(extra: Partial<LiquidatorOptions> = {}) {
  return createLiquidator({
    sql: services.sqlFor('credana_liquidator'),
    client: chain.publicClient,
    account: privateKeyToAccount(localAccount(ROLES.liquidator).privateKey),
    contracts: chain.contracts,
    logger: silentLogger,
    maxFeePerGasWei: 200n * 10n ** 9n,
    ...extra,
  });
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const debtOf = async (who: Address) =>
  (await chain.publicClient.readContract({
    address: chain.contracts.vault,
    abi: credanaVaultAbi,
    functionName: 'debtOf',
    args: [who],
  })) as bigint;

const collateralOf = async (who: Address) =>
  (await chain.publicClient.readContract({
    address: chain.contracts.vault,
    abi: credanaVaultAbi,
    functionName: 'collateralOf',
    args: [who, chain.token('WETH')],
  })) as bigint;

const liquidatedEvents = async (who: Address) =>
  (
    await chain.publicClient.getContractEvents({
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      eventName: 'Liquidated',
      fromBlock: 0n,
    })
  ).filter((l) => (l.args.user as string).toLowerCase() === who);

beforeAll(async () => {
  [services, chain] = await Promise.all([setUpServices(), startChainHarness()]);
  await seedAssets(sql(), chain.contracts);
  ({ indexer } = createTestIndexer(services, chain, { confirmations: 2 }));
  contractsFile = join(mkdtempSync(join(tmpdir(), 'credana-liquidator-')), 'contracts.json');
  writeContractsFile(contractsFile, chain.contracts);
});

afterAll(async () => {
  await indexer?.stop();
  await chain?.stop();
  await services?.close();
});

describe('liquidator', () => {
  it('liquidates an unhealthy account once, across a kill right after the broadcast', async () => {
    const weak = chain.account(3);
    const strong = chain.account(4);
    const weakUser = await seedUser(sql(), { chainId: chain.contracts.chainId, wallet: weak });
    await seedUser(sql(), { chainId: chain.contracts.chainId, wallet: strong });
    await chain.deposit(weak, 'WETH', ETH);
    await chain.deposit(strong, 'WETH', ETH);
    await chain.recordSpendAsSettler(weak, 2_000n * USDC, 'ipi_liq_weak');
    await chain.recordSpendAsSettler(strong, 1_000n * USDC, 'ipi_liq_strong');
    await chain.mine(2);
    await indexer.syncToHead();
    await chain.fund(chain.account(ROLES.liquidator), 'USDC', 10_000n * USDC);

    const inProcess = liquidatorInProcess();
    // At $3,000: 1 ETH × 82.5% = $2,475 covers $2,000. Nothing to do.
    expect(await inProcess.runOnce()).toMatchObject({ checked: 2, unhealthy: 0, sent: 0 });

    await chain.setPrice('WETH', 2_200n * 10n ** 8n); // $1,815 at the threshold: health 0.9075
    await indexer.syncToHead(); // a price drop applies at first sight
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
    const [row] =
      await sql()`select status, debt_covered_usdc::text, collateral_seized_base::text from liquidations`;
    // Below 0.95 the whole debt is covered; seized = $2,000 × 1.05 / $2,200 of WETH, floored.
    expect(row).toEqual({
      status: 'sent',
      debt_covered_usdc: (2_000n * USDC).toString(),
      collateral_seized_base: '954545454545454545',
    });

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
    expect(await liquidatedEvents(weak)).toHaveLength(1);
    expect(await liquidatedEvents(strong)).toHaveLength(0);
    expect(await debtOf(weak)).toBe(0n);
    expect(await debtOf(strong)).toBe(1_000n * USDC);
    expect((await sql()`select count(*)::int as n from liquidations`)[0]?.['n']).toBe(1);
    await indexer.syncToHead();
    const [account] =
      await sql()`select debt_onchain_usdc::text as debt from credit_accounts where user_id = ${weakUser}`;
    expect(account?.['debt']).toBe('0');
    expect(await inProcess.runOnce()).toMatchObject({ unhealthy: 0, sent: 0 });
  }, 60_000);

  it.each([
    ['mined, not yet CHAIN_CONFIRMATIONS deep', 5, false],
    ['already confirmed (a reorg deeper than CHAIN_CONFIRMATIONS)', 6, true],
  ])(
    'follows a liquidation a reorg orphaned when %s, and liquidates the shortfall once',
    async (_, index, deep) => {
      const weak = chain.account(index);
      const weakUser = await seedUser(sql(), { chainId: chain.contracts.chainId, wallet: weak });
      await chain.deposit(weak, 'WETH', ETH);
      await chain.recordSpendAsSettler(weak, 2_000n * USDC, `ipi_liq_reorg_${index}`);
      await chain.setPrice('WETH', 2_200n * 10n ** 8n); // $1,815 at the threshold: health 0.9075
      await chain.mine(2);
      await indexer.syncToHead();
      // Minted and approved before the fork point: only the liquidation is on the orphaned branch.
      await chain.fund(chain.account(ROLES.liquidator), 'USDC', 10_000n * USDC);
      const metrics = createLiquidatorMetrics();
      const liquidator = liquidatorInProcess({ ...REORG_AWARE, resendAfterMs: 0, metrics });
      const rows = () => sql()`
      select status, last_error, nonce, transaction_hash from liquidations where user_id = ${weakUser} order by id`;
      const counter = async (c: typeof metrics.confirmed) => (await c.get()).values[0]?.value ?? 0;

      const fork = await chain.snapshot();
      // Mined in the head block: one confirmation of two, so in flight, not confirmed.
      expect(await liquidator.runOnce()).toMatchObject({ unhealthy: 1, sent: 1, confirmed: 0 });
      expect(await rows()).toMatchObject([{ status: 'mined', last_error: null }]);
      const [orphaned] = await rows();
      expect(await liquidatedEvents(weak)).toHaveLength(1);
      if (deep) {
        await chain.mine(1); // its second confirmation
        expect(await liquidator.runOnce()).toMatchObject({ confirmed: 1, sent: 0 });
        expect(await rows()).toMatchObject([{ status: 'confirmed' }]);
      }
      await indexer.syncToHead(); // the Liquidated log applies at first sight

      // The reorg: the liquidation's block leaves the canonical chain (and the node forgets the
      // transaction); a longer branch without it follows, and the indexer undoes the log.
      await chain.revert(fork);
      await chain.mine(4);
      await indexer.syncToHead();
      expect(await liquidatedEvents(weak)).toHaveLength(0);
      expect(await debtOf(weak)).toBe(2_000n * USDC);

      // Its receipt vanished: followed again (it could be re-mined); the account is not judged meanwhile.
      expect(await liquidator.runOnce()).toMatchObject({ orphaned: 1, sent: 0, confirmed: 0, failed: 0 });
      expect(await rows()).toMatchObject([{ status: 'sent', last_error: 'orphaned by a reorg' }]);
      // Gone from the node and its nonce free: failed, and the shortfall liquidated again with that nonce
      // (not refused by the node, as a send with a cached nonce ahead of the chain's would be).
      expect(await liquidator.runOnce()).toMatchObject({ failed: 1, unhealthy: 1, sent: 1, confirmed: 0 });
      await chain.mine(1); // its second confirmation
      expect(await liquidator.runOnce()).toMatchObject({ confirmed: 1, sent: 0, failed: 0 });
      const [first, second, ...more] = await rows();
      expect(more).toEqual([]);
      expect(first).toMatchObject({ status: 'failed', last_error: 'orphaned by a reorg' });
      expect(second).toMatchObject({ status: 'confirmed', last_error: null, nonce: orphaned?.['nonce'] });

      // One liquidation of the one shortfall: on the chain, in the table, in the indexed books.
      const [log, ...others] = await liquidatedEvents(weak);
      expect(others).toEqual([]);
      expect(log?.transactionHash).toBe(second?.['transaction_hash']);
      expect(await debtOf(weak)).toBe(0n);
      await indexer.syncToHead();
      const [account] =
        await sql()`select debt_onchain_usdc::text as debt from credit_accounts where user_id = ${weakUser}`;
      expect(account?.['debt']).toBe('0');
      // Broadcasts: the orphaned one and the one that stayed. Confirmed: each row once, when deep (the
      // orphaned row too when the reorg was deeper than the confirmations, then counted orphaned).
      expect(await counter(metrics.liquidations)).toBe(2);
      expect(await counter(metrics.confirmed)).toBe(deep ? 2 : 1);
      expect(await counter(metrics.orphaned)).toBe(1);
      expect(await liquidator.runOnce()).toMatchObject({ unhealthy: 0, sent: 0, confirmed: 0 });
    },
    60_000,
  );
  it('does not liquidate at a price only a reorged-away branch had, still in force in the indexer (L3)', async () => {
    const user = chain.account(7);
    const userId = await seedUser(sql(), { chainId: chain.contracts.chainId, wallet: user });
    await chain.setPrice('WETH', 2_200n * 10n ** 8n); // as in force (a rise would wait to be confirmed)
    await chain.deposit(user, 'WETH', 2n * ETH);
    await chain.recordSpendAsSettler(user, 2_000n * USDC, 'ipi_liq_l3_branch');
    await chain.mine(2);
    await indexer.syncToHead();
    await chain.fund(chain.account(ROLES.liquidator), 'USDC', 10_000n * USDC);
    const liquidator = liquidatorInProcess(REORG_AWARE);
    // A branch where WETH drops to $1,000: the indexer applies the drop at first sight.
    const fork = await chain.snapshot();
    await chain.setPrice('WETH', 1_000n * 10n ** 8n);
    await indexer.syncToHead();
    // The reorg removes it; the canonical chain never had that price (health 1.82 at $2,200), and the
    // indexer has not caught up yet: its price in force is still the orphaned $1,000 (health 0.825).
    await chain.revert(fork);
    await chain.mine(3);
    const [inForce] = await sql()`
      select answer::text from prices where asset_id = 'WETH' order by updated_at desc, round_id desc limit 1`;
    expect(inForce?.['answer']).toBe((1_000n * 10n ** 8n).toString());
    // Below 1 at $1,000, both this account and the first test's $1,000-debt account (health 0.825): the
    // chain finds both healthy, so neither is liquidated.
    expect(await liquidator.runOnce()).toMatchObject({ unhealthy: 2, healthyOnChain: 2, sent: 0 });
    expect(await sql()`select status from liquidations where user_id = ${userId}`).toEqual([]);
    expect(await collateralOf(user)).toBe(2n * ETH);
    expect(await debtOf(user)).toBe(2_000n * USDC);
    await indexer.syncToHead(); // the indexer undoes the orphaned round: nothing to judge any more
    expect(await liquidator.runOnce()).toMatchObject({ unhealthy: 0, sent: 0 });
  }, 60_000);

  it('is refused by the vault when the price recovers after it signed, before it is mined (L3): failed, not seized', async () => {
    const user = chain.account(8);
    const userId = await seedUser(sql(), { chainId: chain.contracts.chainId, wallet: user });
    await chain.deposit(user, 'WETH', ETH);
    await chain.recordSpendAsSettler(user, 2_000n * USDC, 'ipi_liq_l3_race');
    await chain.setPrice('WETH', 2_200n * 10n ** 8n); // $1,815 at the threshold: health 0.9075
    await chain.mine(2);
    await indexer.syncToHead();
    await chain.fund(chain.account(ROLES.liquidator), 'USDC', 10_000n * USDC);
    const weth = chain.contracts.assets.find((a) => a.assetId === 'WETH');
    if (weth === undefined) throw new Error('no WETH');
    let recovery: Hex | null = null;
    const liquidator = liquidatorInProcess({
      ...REORG_AWARE,
      // Signed and broadcast on an unhealthy account; the feed's recovery to $3,000 lands first, in the
      // same block (a far higher tip orders it ahead).
      afterBroadcast: async () => {
        recovery = await chain.walletClient.writeContract({
          account: localAccount(ROLES.deployer).address,
          chain: chain.walletClient.chain,
          address: weth.aggregator,
          abi: mockAggregatorAbi,
          functionName: 'transmit',
          args: [3_000n * 10n ** 8n],
          maxFeePerGas: 1_000n * 10n ** 9n,
          maxPriorityFeePerGas: 900n * 10n ** 9n,
        });
        await chain.testClient.request({ method: 'evm_mine', params: [] } as never);
      },
    });
    await chain.testClient.setAutomine(false);
    let report: Awaited<ReturnType<typeof liquidator.runOnce>>;
    try {
      report = await liquidator.runOnce();
    } finally {
      await chain.testClient.setAutomine(true);
    }
    expect(report).toMatchObject({ unhealthy: 1, healthyOnChain: 0, sent: 1 });
    const [row] = await sql()`select status, transaction_hash from liquidations where user_id = ${userId}`;
    const receipt = await chain.publicClient.getTransactionReceipt({
      hash: row?.['transaction_hash'] as Hex,
    });
    const priceReceipt = await chain.publicClient.getTransactionReceipt({ hash: recovery as unknown as Hex });
    // One block: the recovery first, then the liquidation, which the vault reverted.
    expect(priceReceipt.blockNumber).toBe(receipt.blockNumber);
    expect(priceReceipt.transactionIndex).toBeLessThan(receipt.transactionIndex);
    expect(receipt.status).toBe('reverted');
    await expect(
      chain.publicClient.simulateContract({
        account: chain.account(ROLES.liquidator),
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'liquidate',
        args: [user, chain.token('WETH'), 1n, 1n],
      }),
    ).rejects.toThrow(/AccountHealthy/);
    await chain.mine(1); // its second confirmation
    expect(await liquidator.runOnce()).toMatchObject({ failed: 1, sent: 0 });
    expect(await sql()`select status, last_error from liquidations where user_id = ${userId}`).toEqual([
      { status: 'failed', last_error: 'reverted' },
    ]);
    expect(await collateralOf(user)).toBe(ETH);
    expect(await debtOf(user)).toBe(2_000n * USDC);
    expect(await liquidatedEvents(user)).toHaveLength(0);
    // Judged afresh: the indexer holds the rise to $3,000 back (36 %, beyond the 30 % a round may rise
    // unconfirmed), so the account is below 1 at the price in force, but healthy on the chain: nothing sent.
    await indexer.syncToHead();
    const [inForce] = await sql()`
      select answer::text from prices where asset_id = 'WETH' order by updated_at desc, round_id desc limit 1`;
    expect(inForce?.['answer']).toBe((2_200n * 10n ** 8n).toString());
    expect(await liquidator.runOnce()).toMatchObject({ unhealthy: 1, healthyOnChain: 1, sent: 0 });
    expect(await liquidatedEvents(user)).toHaveLength(0);
  }, 60_000);
});
