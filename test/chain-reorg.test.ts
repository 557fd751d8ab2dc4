// Proves reorgs are invisible in the end: real Hardhat reorgs (snapshot, revert, conflicting
// transactions) of depth 1 and 5 leave Postgres and Redis equal to a fresh index of the canonical
// chain, before and after confirmations; a reorg deeper than the limit halts with an alert.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indexer } from '../indexer/runtime/index.ts';
import { type ChainHarness, seedAssets, seedUser, startChainHarness } from '../scripts/chain/harness.ts';
import { cachedChainState, createTestIndexer, indexedState } from '../scripts/chain/testing.ts';
import { ReorgTooDeepError } from '../shared/chain/rpc/index.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import { setUpServices, type TestServices } from './support/db.ts';

const ETH = 10n ** 18n;
const BTC = 10n ** 8n;
const USDC = 10n ** 6n;
const CONFIRMATIONS = 2;
const REORG_DEPTH_MAX = 8;

let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
const users = { a: randomUUID(), b: randomUUID(), c: randomUUID() };
let wallets: { a: `0x${string}`; b: `0x${string}`; c: `0x${string}`; x: `0x${string}` };
/** Captures waiting for settlement, the same in every database (the ledger writer's output). */
const captures = ['ipi_base', 'ipi_a1', 'ipi_a2', 'ipi_a3', 'ipi_a4'].map((ref) => ({
  ref,
  userId: users.a,
  amountCents: 1_000n,
}));

/** The inputs the indexer does not own: assets, users, wallets, captures awaiting settlement. */
async function seedInputs(target: TestServices): Promise<void> {
  const sql = target.database.sql;
  await seedAssets(sql, chain.contracts);
  const chainId = chain.contracts.chainId;
  await seedUser(sql, { chainId, userId: users.a, wallet: wallets.a });
  await seedUser(sql, { chainId, userId: users.b, wallet: wallets.b });
  await seedUser(sql, { chainId, userId: users.c, wallet: wallets.c });
  for (const capture of captures) {
    await sql`insert into settlements (ref, user_id, amount_cents, amount_usdc, status)
      values (${capture.ref}, ${capture.userId}, ${capture.amountCents.toString()},
        ${(capture.amountCents * 10_000n).toString()}, 'sent')`;
    await sql`update credit_accounts set unsettled_cents = unsettled_cents + ${capture.amountCents.toString()}
      where user_id = ${capture.userId}`;
  }
  for (const userId of Object.values(users)) await ensureAccount(target.redis, sql, target.prefix, userId);
}

/** Indexes the chain from scratch into new databases and compares everything the indexer derives. */
async function expectEqualToFreshIndex(): Promise<void> {
  const fresh = await setUpServices();
  try {
    await seedInputs(fresh);
    const { indexer: freshIndexer } = createTestIndexer(fresh, chain, {
      confirmations: CONFIRMATIONS,
      reorgDepthMax: REORG_DEPTH_MAX,
    });
    await freshIndexer.syncToHead();
    expect(await indexedState(services.database.sql)).toEqual(await indexedState(fresh.database.sql));
    const ids = Object.values(users);
    expect(await cachedChainState(services.redis, services.prefix, ids)).toEqual(
      await cachedChainState(fresh.redis, fresh.prefix, ids),
    );
  } finally {
    await fresh.close();
  }
}

const spend = (ref: string) => chain.recordSpendAsSettler(wallets.a, 1_000n * 10_000n, ref);
const reorgAudits = async () =>
  services.database.sql`select action, data from audit_log where action like 'chain_reorg%' order by id`;

beforeAll(async () => {
  [services, chain] = await Promise.all([setUpServices(), startChainHarness({ withdrawalDelayS: 0 })]);
  wallets = { a: chain.account(3), b: chain.account(4), c: chain.account(5), x: chain.account(6) };
  await seedInputs(services);
  ({ indexer } = createTestIndexer(services, chain, {
    confirmations: CONFIRMATIONS,
    reorgDepthMax: REORG_DEPTH_MAX,
  }));
  // Confirmed history before any fork, and balances and allowances so each fork is one tx per action.
  await chain.deposit(wallets.a, 'WETH', 10n * ETH);
  await chain.deposit(wallets.b, 'WETH', 5n * ETH);
  await chain.deposit(wallets.b, 'WBTC', 1n * BTC);
  await chain.deposit(wallets.c, 'WETH', 2n * ETH);
  await chain.deposit(wallets.x, 'WETH', 1n * ETH); // nobody linked this wallet
  await spend('ipi_base');
  for (const w of [wallets.a, wallets.b, wallets.c, wallets.x]) {
    await chain.fund(w, 'WETH', 100n * ETH);
    await chain.fund(w, 'WBTC', 10n * BTC);
  }
  await chain.fund(chain.account(2), 'USDC', 1_000n * USDC);
  await chain.mine(CONFIRMATIONS);
  await indexer.syncToHead();
});

afterAll(async () => {
  await indexer?.stop();
  await chain?.stop();
  await services?.close();
});

describe('reorgs within the limit', () => {
  it('depth 1 (same height, conflicting deposits, withdrawals and spends): equal to a fresh index', async () => {
    const snapshot = await chain.snapshot();
    const orphanedBlock = await chain.inOneBlock(async () => {
      await chain.depositOnly(wallets.a, 'WETH', 2n * ETH);
      await chain.requestWithdrawal(wallets.b, 'WETH', 1n * ETH);
      await spend('ipi_a1');
      await chain.requestWithdrawal(wallets.x, 'WETH', 1n * ETH);
    });
    await indexer.syncToHead();
    // First sight: the withdrawal request and the spend count, the deposit waits.
    const [b] = await services.database.sql`
      select pending_withdrawal_base::text as w from positions where user_id = ${users.b} and asset_id = 'WETH'`;
    expect(b?.['w']).toBe(ETH.toString());
    const [settled] = await services.database.sql`select status from settlements where ref = 'ipi_a1'`;
    expect(settled?.['status']).toBe('confirmed');

    await chain.revert(snapshot);
    const canonicalBlock = await chain.inOneBlock(async () => {
      await chain.requestWithdrawal(wallets.a, 'WETH', 1n * ETH);
      await chain.depositOnly(wallets.b, 'WETH', 3n * ETH);
      await spend('ipi_a2');
      await chain.requestWithdrawal(wallets.c, 'WETH', ETH / 2n);
    });
    expect(canonicalBlock).toBe(orphanedBlock);
    await indexer.syncToHead();

    const audits = await reorgAudits();
    expect(audits.at(-1)?.['data']).toMatchObject({ depth: 1 });
    const [reopened] = await services.database.sql`select status from settlements where ref = 'ipi_a1'`;
    expect(reopened?.['status']).toBe('sent');
    await expectEqualToFreshIndex();
    await chain.mine(CONFIRMATIONS);
    await indexer.syncToHead();
    await expectEqualToFreshIndex();
  });

  it('depth 5 (longer fork, price drop and liquidation involved): equal to a fresh index', async () => {
    const ancestor = await chain.head();
    const snapshot = await chain.snapshot();
    await chain.inOneBlock(async () => {
      await chain.depositOnly(wallets.a, 'WETH', 1n * ETH);
      await spend('ipi_a3');
    });
    // A crash to $2 (applied at first sight, then orphaned): 11 WETH × $2 × 82.5 % < $30 of debt, so the
    // vault lets the liquidator act.
    await chain.setPrice('WETH', 2n * 10n ** 8n);
    await chain.finalizeWithdrawal(wallets.c, 'WETH');
    await chain.requestWithdrawal(wallets.b, 'WETH', 2n * ETH);
    await chain.liquidate(wallets.a, 'WETH', ETH / 2n, 5n * USDC);
    expect(await chain.head()).toBe(ancestor + 5n);
    await indexer.syncToHead();
    const [price] = await services.database
      .sql`select count(*)::int as n from prices where answer = ${(2n * 10n ** 8n).toString()}`;
    expect(price?.['n']).toBe(1);

    await chain.revert(snapshot);
    await chain.cancelWithdrawal(wallets.c, 'WETH');
    await chain.depositOnly(wallets.b, 'WBTC', 1n * BTC);
    await spend('ipi_a4');
    await chain.setPrice('WETH', 1n * 10n ** 8n); // $1 on this branch: liquidatable here too
    await chain.liquidate(wallets.a, 'WETH', 1n * ETH, 5n * USDC);
    await chain.depositOnly(wallets.x, 'WETH', 1n * ETH);
    await chain.mine(2);
    await indexer.syncToHead();

    const audits = await reorgAudits();
    expect(audits.at(-1)?.['data']).toMatchObject({ depth: 5 });
    const [gone] = await services.database
      .sql`select count(*)::int as n from prices where answer = ${(2n * 10n ** 8n).toString()}`;
    expect(gone?.['n']).toBe(0);
    await expectEqualToFreshIndex();
    await chain.mine(CONFIRMATIONS);
    await indexer.syncToHead();
    await expectEqualToFreshIndex();
  });
});

describe('a reorg deeper than the limit', () => {
  it('halts the indexer with an alert and changes nothing', async () => {
    const snapshot = await chain.snapshot();
    await chain.depositOnly(wallets.a, 'WETH', 1n * ETH);
    await chain.mine(REORG_DEPTH_MAX);
    await indexer.syncToHead();
    const before = await indexedState(services.database.sql);
    const cursorBefore = indexer.cursor;

    await chain.revert(snapshot);
    await chain.depositOnly(wallets.b, 'WETH', 1n * ETH);
    await chain.mine(REORG_DEPTH_MAX + 1);
    await expect(indexer.syncToHead()).rejects.toBeInstanceOf(ReorgTooDeepError);
    expect(indexer.status).toBe('halted');
    const audits = await reorgAudits();
    expect(audits.at(-1)?.['action']).toBe('chain_reorg_too_deep');
    expect(await indexer.metrics.registry.getSingleMetricAsString('indexer_halts_total')).toContain(
      'code="reorg_too_deep"} 1',
    );
    expect(indexer.cursor).toEqual(cursorBefore);
    expect(await indexedState(services.database.sql)).toEqual(before);
    // It stays halted: no guessing on a later step either.
    await expect(indexer.syncToHead()).rejects.toMatchObject({ code: 'indexer_halted' });
  });
});
