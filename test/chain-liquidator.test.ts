// Proves the liquidator liquidates an account below a health factor of 1 exactly once on real services
// (Hardhat node, Postgres, indexer, the liquidator as a real process): killed right after broadcasting,
// restarted, the liquidation is followed, never repeated; healthy accounts are left alone.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indexer } from '../indexer/runtime/index.ts';
import { createLiquidator } from '../liquidator/index.ts';
import {
  type ChainHarness,
  localAccount,
  ROLES,
  seedAssets,
  seedUser,
  startChainHarness,
} from '../scripts/chain/harness.ts';
import { createTestIndexer, silentLogger, spawnLiquidator } from '../scripts/chain/testing.ts';
import { credanaVaultAbi, writeContractsFile } from '../shared/chain/contracts/index.ts';
import { setUpServices, type TestServices } from './support/db.ts';

const ETH = 10n ** 18n;
const USDC = 10n ** 6n;
let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let contractsFile: string;
const sql = () => services.database.sql;

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

    const inProcess = createLiquidator({
      sql: services.sqlFor('credana_liquidator'),
      client: chain.publicClient,
      account: privateKeyToAccount(localAccount(ROLES.liquidator).privateKey),
      contracts: chain.contracts,
      logger: silentLogger,
      maxFeePerGasWei: 200n * 10n ** 9n,
    });
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
});
