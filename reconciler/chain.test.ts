// Proves the chain job reads the vault with viem (deployless multicall on a real local hardhat chain, at the indexer's cursor block) and finds nothing when the real indexer has indexed it, then reports exactly an injected collateral and debt mismatch between the chain and the indexed positions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ChainHarness,
  ROLES,
  seedAssets,
  seedUser,
  startChainHarness,
} from '../scripts/chain/harness.ts';
import { createTestIndexer } from '../scripts/chain/testing.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { chainJob } from './chain.ts';
import { runRecorded } from './runs.ts';

let services: TestServices;
let harness: ChainHarness;
const users: string[] = [];

beforeAll(async () => {
  services = await setUpServices();
  harness = await startChainHarness();
  const sql = services.database.sql;
  await seedAssets(sql, harness.contracts);
  for (let i = 0; i < 2; i++) {
    const wallet = harness.account(ROLES.firstUser + i);
    users.push(await seedUser(sql, { chainId: harness.contracts.chainId, wallet }));
    await harness.deposit(wallet, 'WETH', 10n ** 18n * BigInt(i + 1));
  }
  await harness.recordSpendAsSettler(harness.account(ROLES.firstUser), 12_340_000n, 'ref-chain-test');
  await harness.mine(3); // past the indexer's confirmations
  const { indexer } = createTestIndexer(services, harness);
  await indexer.init();
  await indexer.syncToHead();
}, 120_000);

afterAll(async () => {
  await harness?.stop();
  await services?.close();
});

describe('chain job', () => {
  const job = () =>
    chainJob({ client: harness.publicClient, contracts: harness.contracts, usersPerBatch: 1 });

  it('agrees with a fresh index of the chain', async () => {
    const result = await runRecorded({ sql: services.sqlFor('credana_reconciliation') }, 'chain', job());
    expect(result.findings).toEqual([]);
    expect(result.checked).toBe(2);
  });

  it('reports an indexed position or debt that differs from the vault', async () => {
    const sql = services.database.sql;
    await sql`update positions set collateral_base = collateral_base + 1 where user_id = ${users[1]!} and asset_id = 'WETH'`;
    await sql`update credit_accounts set debt_onchain_usdc = 0 where user_id = ${users[0]!}`;
    const result = await runRecorded({ sql }, 'chain', job());
    expect(
      result.findings.map((f) => [f.kind, f['userId'], f['assetId'], f['onchain'], f['indexed']]),
    ).toEqual(
      [
        ['chain_debt_mismatch', users[0], null, '12340000', '0'],
        ['chain_collateral_mismatch', users[1], 'WETH', '2000000000000000000', '2000000000000000001'],
      ].sort((a, b) => (String(a[1]) < String(b[1]) ? -1 : 1)),
    );
  });
});
