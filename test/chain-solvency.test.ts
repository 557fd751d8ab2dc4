// Proves collateral cannot leave while it backs credit, on real services (Hardhat node, Postgres, Redis,
// hot path, ledger writer, indexer, settlement worker, approval service): spend to the limit, request
// withdrawal of everything, wait, finalize fails at every step order; the true excess leaves; expired,
// replayed and forged approvals are refused; a multi-wallet user's debt sits with the collateral credit
// counts; refunds reach the chain exactly once (worker killed and restarted) leaving unsettled at zero;
// nothing is sent while the base fee is above the cap.
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address, Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indexer } from '../indexer/runtime/index.ts';
import { createLedgerWriterMetrics } from '../ledger-writer/metrics.ts';
import { createLedgerWriter, type LedgerWriter } from '../ledger-writer/writer.ts';
import {
  type ChainHarness,
  localAccount,
  ROLES,
  seedAssets,
  seedUser,
  startChainHarness,
} from '../scripts/chain/harness.ts';
import { cachedCredit, createTestIndexer, silentLogger, spawnSettlement } from '../scripts/chain/testing.ts';
import {
  createSettlementMetrics,
  createSettlementWorker,
  type SettlementWorker,
} from '../settlement/index.ts';
import { credanaVaultAbi, testTokenAbi, writeContractsFile } from '../shared/chain/contracts/index.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import { duplicateRedis } from '../shared/redis/client.ts';
import {
  approveWithdrawal,
  signWithdrawalApproval,
  type WithdrawalApproval,
  withdrawalRoutes,
} from '../withdrawals/index.ts';
import { redisEnv, setUpServices, type TestServices } from './support/db.ts';
import { type HotPath, post, startHotPath } from './support/hot-path.ts';
import { authorizationRequest, transactionEvent } from './support/stripe.ts';

const ETH = 10n ** 18n;
const USDC = 10n ** 6n;
const GWEI = 10n ** 9n;
const DELAY_S = 30;
let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let hotPath: HotPath;
let writer: LedgerWriter;
let contractsFile: string;

const sql = () => services.database.sql;
const nowS = () => Math.floor(Date.now() / 1000);
const signer = () => privateKeyToAccount(localAccount(ROLES.deployer).privateKey);
const worker = (overrides: Partial<Parameters<typeof createSettlementWorker>[0]> = {}): SettlementWorker =>
  createSettlementWorker({
    sql: services.sqlFor('credana_settlement'),
    client: chain.publicClient,
    account: privateKeyToAccount(localAccount(ROLES.settler).privateKey),
    vault: chain.contracts.vault,
    chainId: chain.contracts.chainId,
    logger: silentLogger,
    maxFeePerGasWei: 200n * GWEI,
    ...overrides,
  });
/** The withdrawal approval service's dependencies, as its role. */
const deps = () => ({
  sql: services.sqlFor('credana_withdrawals'),
  redis: services.redis,
  prefix: services.prefix,
  client: chain.publicClient,
  contracts: chain.contracts,
  signer: signer(),
  logger: silentLogger,
});

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

interface User {
  userId: string;
  cardId: string;
  wallet: Address;
}

async function newUser(walletIndex: number): Promise<User> {
  const wallet = chain.account(walletIndex);
  const userId = await seedUser(sql(), {
    chainId: chain.contracts.chainId,
    wallet,
    creditLimitCents: 10_000_000n,
  });
  const cardId = `ic_${randomBytes(8).toString('hex')}`;
  await sql()`insert into cards (id, user_id) values (${cardId}, ${userId})`;
  await ensureAccount(services.redis, sql(), services.prefix, userId);
  return { userId, cardId, wallet };
}

async function sync(confirm = false): Promise<void> {
  if (confirm) await chain.mine(2);
  await indexer.syncToHead();
}

async function authorize(
  user: User,
  amountCents: number,
): Promise<{ approved: boolean; authorizationId: string }> {
  const request = authorizationRequest({ cardId: user.cardId, amountCents });
  const decision = await post(hotPath, '/stripe/authorizations', request);
  return { approved: decision.json.approved === true, authorizationId: request.data.object.id };
}

/** A Stripe capture or refund through the hot path and the ledger writer. Returns the transaction id. */
async function transaction(
  user: User,
  type: 'capture' | 'refund',
  authorizationId: string,
  amountCents: number,
): Promise<string> {
  const transactionId = `ipi_${randomBytes(8).toString('hex')}`;
  const event = transactionEvent({
    cardId: user.cardId,
    type,
    amountCents,
    authorizationId,
    createdS: nowS(),
    transactionId,
  });
  expect((await post(hotPath, '/stripe/events', event)).status).toBe(200);
  await waitFor(
    async () =>
      (await sql()`select 1 from ledger_transfers where ref = ${`lifecycle:${event.id}`}`).length === 1,
    `the ledger writer to book the ${type}`,
  );
  // The writer archives the raw event in a transaction of its own, after the money; the settlement
  // worker names a capture by the transaction id in that event and claims it only once the event is
  // there. Waiting for the money alone raced it (seen under load: the worker claimed nothing).
  await waitFor(
    async () => (await sql()`select 1 from card_events where id = ${event.id}`).length === 1,
    `the ledger writer to archive the ${type} event`,
  );
  return transactionId;
}

const approval = (user: User, assetId = 'WETH') =>
  approveWithdrawal(deps(), { userId: user.userId, assetId });

async function finalizeWith(user: User, a: WithdrawalApproval): Promise<bigint> {
  return chain.finalizeWithdrawalWith(user.wallet, 'WETH', a.deadline, a.signature);
}

async function books(user: User) {
  const [row] = await sql()`select debt_onchain_usdc::text as debt, unsettled_cents::text as uns
    from credit_accounts where user_id = ${user.userId}`;
  const debtOnChain = (await chain.publicClient.readContract({
    address: chain.contracts.vault,
    abi: credanaVaultAbi,
    functionName: 'debtOf',
    args: [user.wallet],
  })) as bigint;
  return {
    debtUsdc: BigInt(row?.['debt'] as string),
    unsettledCents: BigInt(row?.['uns'] as string),
    debtOnChain,
  };
}

const wethOf = async (who: Address) =>
  (await chain.publicClient.readContract({
    address: chain.token('WETH'),
    abi: testTokenAbi,
    functionName: 'balanceOf',
    args: [who],
  })) as bigint;

beforeAll(async () => {
  [services, chain] = await Promise.all([setUpServices(), startChainHarness({ withdrawalDelayS: DELAY_S })]);
  await seedAssets(sql(), chain.contracts);
  ({ indexer } = createTestIndexer(services, chain, { confirmations: 2 }));
  await sync(true);
  hotPath = await startHotPath(services);
  writer = createLedgerWriter({
    redis: duplicateRedis(services.redis),
    sql: services.sqlFor('credana_ledger_writer'),
    prefix: services.prefix,
    consumer: 'chain-solvency-test',
    batchMax: 50,
    batchWaitMs: 10,
    metrics: createLedgerWriterMetrics(),
  });
  await writer.start();
  contractsFile = join(mkdtempSync(join(tmpdir(), 'credana-solvency-')), 'contracts.json');
  writeContractsFile(contractsFile, chain.contracts);
});

afterAll(async () => {
  await writer?.stop();
  await hotPath?.close();
  await indexer?.stop();
  await chain?.stop();
  await services?.close();
});

describe('the withdrawal attack: spend to the limit, request everything, wait the delay, finalize', () => {
  let user: User;

  it('fails with the spend requested after it: hold open, captured, captured and settled', async () => {
    user = await newUser(3);
    await chain.deposit(user.wallet, 'WETH', ETH); // $3,000 × 80% = $2,400 of borrow power
    await sync(true);
    const spend = await authorize(user, 200_000);
    expect(spend.approved).toBe(true);

    await chain.requestWithdrawal(user.wallet, 'WETH', ETH);
    await sync();
    await chain.testClient.increaseTime({ seconds: DELAY_S + 1 });
    // Hold open: only the program knows it.
    expect(await approval(user)).toMatchObject({
      approved: false,
      reason: 'uncovered',
      exposureCents: 200_000n,
    });
    // Without the program's approval the vault pays nothing.
    await expect(finalizeWith(user, { deadline: 2n ** 63n, signature: '0x' } as never)).rejects.toThrow(
      /InvalidApproval/,
    );

    // Captured, not settled: unsettled.
    await transaction(user, 'capture', spend.authorizationId, 200_000);
    expect(await approval(user)).toMatchObject({
      approved: false,
      reason: 'uncovered',
      exposureCents: 200_000n,
    });

    // Captured and settled: on-chain debt. Even an approval signed with no check at all is refused by
    // the vault, which prices the debt itself.
    expect(await worker().runOnce()).toMatchObject({ sent: 1 });
    await sync();
    expect((await books(user)).debtOnChain).toBe(2_000n * USDC);
    expect(await approval(user)).toMatchObject({
      approved: false,
      reason: 'uncovered',
      exposureCents: 200_000n,
    });
    await expect(chain.finalizeWithdrawal(user.wallet, 'WETH')).rejects.toThrow(/Undercollateralized/);
    expect(await wethOf(user.wallet)).toBe(0n);
  });

  it('lets the true excess leave, and refuses a wei more', async () => {
    await chain.cancelWithdrawal(user.wallet, 'WETH');
    await sync(true); // a cancellation raises credit: it waits for confirmations
    // $2,000 of debt needs $2,500 of collateral at 80%: 5/6 ETH stays, 1/6 ETH may leave.
    await chain.requestWithdrawal(user.wallet, 'WETH', (17n * ETH) / 100n);
    await sync();
    expect(await approval(user)).toMatchObject({ approved: false, reason: 'uncovered' });
    await chain.cancelWithdrawal(user.wallet, 'WETH');
    await sync(true);
    await chain.requestWithdrawal(user.wallet, 'WETH', (16n * ETH) / 100n);
    await sync();
    await chain.testClient.increaseTime({ seconds: DELAY_S + 1 });
    const decision = await approval(user);
    if (!decision.approved) throw new Error(`refused: ${decision.reason}`);
    expect(decision.borrowPowerAfterCents).toBe(201_600n);
    await finalizeWith(user, decision.approval);
    expect(await wethOf(user.wallet)).toBe((16n * ETH) / 100n);
    const [recorded] =
      await sql()`select count(*)::int as n from withdrawal_approvals where user_id = ${user.userId}`;
    expect(recorded?.['n']).toBe(1);

    // Replayed: the request it approved is gone, and the next request has another id.
    await expect(finalizeWith(user, decision.approval)).rejects.toThrow(/NoPendingWithdrawal/);
    await chain.requestWithdrawal(user.wallet, 'WETH', ETH / 1000n);
    await sync();
    await chain.testClient.increaseTime({ seconds: DELAY_S + 1 });
    await expect(finalizeWith(user, { ...decision.approval })).rejects.toThrow(/InvalidApproval/);
    // Forged: the right message signed by a key without the signer role.
    const next = await approval(user);
    if (!next.approved) throw new Error(`refused: ${next.reason}`);
    const forged = await signWithdrawalApproval(
      privateKeyToAccount(localAccount(9).privateKey),
      chain.contracts.chainId,
      chain.contracts.vault,
      next.approval,
    );
    await expect(finalizeWith(user, { ...next.approval, signature: forged })).rejects.toThrow(
      /InvalidApproval/,
    );
    // Expired: the deadline passed on the chain's clock.
    await chain.testClient.increaseTime({ seconds: 601 });
    await expect(finalizeWith(user, next.approval)).rejects.toThrow(/ApprovalExpired/);
  });

  it('fails with the request before the spend: the spend is declined, and the withdrawal leaves nothing owed', async () => {
    const early = await newUser(4);
    await chain.deposit(early.wallet, 'WETH', ETH);
    await sync(true);
    await chain.requestWithdrawal(early.wallet, 'WETH', ETH);
    await sync(); // a request cuts credit at first sight
    expect((await authorize(early, 1_000)).approved).toBe(false);
    await chain.testClient.increaseTime({ seconds: DELAY_S + 1 });
    const decision = await approval(early);
    if (!decision.approved) throw new Error(`refused: ${decision.reason}`);
    expect(decision.exposureCents).toBe(0n);
    await finalizeWith(early, decision.approval);
    expect(await wethOf(early.wallet)).toBe(ETH);
  });

  it('refuses a request the indexer has not applied yet (it is the reservation)', async () => {
    const fresh = await newUser(8);
    await chain.deposit(fresh.wallet, 'WETH', ETH);
    await sync(true);
    await chain.requestWithdrawal(fresh.wallet, 'WETH', ETH / 2n);
    expect(await approval(fresh)).toMatchObject({ approved: false, reason: 'request_not_indexed' });
    await sync();
    expect(await approval(fresh)).toMatchObject({ approved: true });
  });
});

describe('the approval route', () => {
  it('answers an internal caller with the token only: 401, 400, 413, 409 with the refusal, 200 with the approval', async () => {
    const app = withdrawalRoutes(deps(), 'internal-token-for-tests');
    const user = await newUser(11);
    await chain.deposit(user.wallet, 'WETH', ETH);
    await sync(true);
    const call = (body: unknown, token = 'internal-token-for-tests') =>
      app.request('/withdrawals/approvals', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    expect((await call({ userId: user.userId, assetId: 'WETH' }, 'wrong')).status).toBe(401);
    expect((await call({ userId: 'not-a-uuid', assetId: 'WETH' })).status).toBe(400);
    // A body far beyond {userId, assetId} is refused unread.
    const huge = await call({ userId: user.userId, assetId: 'WETH', padding: 'x'.repeat(100_000) });
    expect([huge.status, await huge.json()]).toEqual([413, { error: 'body_too_large' }]);
    const refused = await call({ userId: user.userId, assetId: 'WETH' });
    expect(refused.status).toBe(409);
    expect(await refused.json()).toEqual({ approved: false, reason: 'no_pending_withdrawal' });
    await chain.requestWithdrawal(user.wallet, 'WETH', ETH / 2n);
    await sync();
    const approved = await call({ userId: user.userId, assetId: 'WETH' });
    expect(approved.status).toBe(200);
    const body = (await approved.json()) as {
      amount: string;
      requestId: string;
      deadline: string;
      signature: Hex;
    };
    expect(body.amount).toBe((ETH / 2n).toString());
    await chain.testClient.increaseTime({ seconds: DELAY_S + 1 });
    await chain.finalizeWithdrawalWith(user.wallet, 'WETH', BigInt(body.deadline), body.signature);
    expect(await wethOf(user.wallet)).toBe(ETH / 2n);
  });
});

describe('one position per user', () => {
  it('counts only the vault account, where the debt is recorded and can be liquidated', async () => {
    const user = await newUser(5); // wallet 5 is linked first: the user's vault account
    const second = chain.account(6);
    await sql()`insert into wallets (chain_id, address, user_id, linked_at)
      values (${chain.contracts.chainId}, ${second}, ${user.userId}, now() + interval '1 second')`;
    // Collateral the second wallet keeps in its own position is not liquidatable with the user's debt.
    await chain.deposit(second, 'WETH', ETH);
    await sync(true);
    const credit = await cachedCredit(services.redis, sql(), services.prefix, 31_337, user.userId, nowS());
    expect(credit.borrowPowerCents).toBe(0n);
    expect((await authorize(user, 1_000)).approved).toBe(false);

    // Funding the account from the second wallet counts.
    await chain.fund(second, 'WETH', ETH);
    await chain.walletClient.writeContract({
      account: second,
      chain: chain.walletClient.chain,
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      functionName: 'depositFor',
      args: [user.wallet, chain.token('WETH'), ETH],
    });
    await sync(true);
    expect(
      (await cachedCredit(services.redis, sql(), services.prefix, 31_337, user.userId, nowS()))
        .borrowPowerCents,
    ).toBe(240_000n);
    const spend = await authorize(user, 100_000);
    expect(spend.approved).toBe(true);
    await transaction(user, 'capture', spend.authorizationId, 100_000);
    expect(await worker().runOnce()).toMatchObject({ sent: 1 });
    await sync();
    expect((await books(user)).debtOnChain).toBe(1_000n * USDC);
    // The debt sits with the collateral: the liquidator can act on it once it is unhealthy (1 WETH at
    // $3,000 × 82.5 % = $2,475 < $2,500: the vault judges that itself).
    await chain.recordSpendAsSettler(user.wallet, 1_500n * USDC, 'ipi_solvency_unhealthy');
    await chain.fund(chain.account(ROLES.liquidator), 'USDC', 300n * USDC);
    await chain.liquidate(user.wallet, 'WETH', ETH / 10n, 300n * USDC);
    await sync();
    expect((await books(user)).debtUsdc).toBe(2_200n * USDC);
  });
});

describe('refunds reach the chain', () => {
  let user: User;

  it('a refund credited before its capture settles leaves unsettled at zero, not below', async () => {
    user = await newUser(7);
    await chain.deposit(user.wallet, 'WETH', ETH);
    await sync(true);
    const spend = await authorize(user, 50_000);
    expect(spend.approved).toBe(true);
    await transaction(user, 'capture', spend.authorizationId, 50_000);
    const refund = await transaction(user, 'refund', spend.authorizationId, 20_000);
    expect((await books(user)).unsettledCents).toBe(30_000n);
    const report = await worker().runOnce();
    await sync();
    const after = await books(user);
    expect(after).toEqual({ debtUsdc: 300n * USDC, unsettledCents: 0n, debtOnChain: 300n * USDC });
    expect(report).toMatchObject({ sent: 1, refundsClaimed: 1, refundsSent: 1 });
    const [row] = await sql()`select status from chain_refunds where ref = ${`refund:${refund}`}`;
    expect(row?.['status']).toBe('confirmed');
    const credit = await cachedCredit(services.redis, sql(), services.prefix, 31_337, user.userId, nowS());
    expect(credit.debtOnchainCents).toBe(30_000n);
  });

  it('records a refund once when the worker is killed after broadcasting it and restarted', async () => {
    // A refund is credited (and so sent on-chain) while its capture is unsettled; after settlement
    // the lifecycle holds it for review instead.
    const spend = await authorize(user, 10_000);
    expect(spend.approved).toBe(true);
    await transaction(user, 'capture', spend.authorizationId, 10_000);
    const refund = await transaction(user, 'refund', spend.authorizationId, 4_000);
    const env = {
      DATABASE_URL: services.urlFor('credana_settlement'),
      ...redisEnv(services),
      REDIS_KEY_PREFIX: services.prefix,
      CHAIN_RPC_URL: chain.url,
      CHAIN_ID: String(chain.contracts.chainId),
      CONTRACTS_FILE: contractsFile,
      SETTLER_PRIVATE_KEY: localAccount(ROLES.settler).privateKey,
      LOG_LEVEL: 'info',
    };
    const crashed = spawnSettlement(env, ['--crash-after', 'refund-broadcast', '--poll-interval-ms', '50']);
    expect(await crashed.exited).toBe('SIGKILL');
    const [sentRow] =
      await sql()`select status, transaction_hash from chain_refunds where ref = ${`refund:${refund}`}`;
    expect(sentRow?.['status']).toBe('sent'); // broadcast, then killed before anything else
    const restarted = spawnSettlement(env, ['--poll-interval-ms', '50', '--resend-after-ms', '300']);
    try {
      await waitFor(async () => {
        await sync();
        const [row] = await sql()`select status from chain_refunds where ref = ${`refund:${refund}`}`;
        return row?.['status'] === 'confirmed';
      }, 'the refund to be confirmed').catch((error: unknown) => {
        throw new Error(
          `${String(error)}\n${crashed.output().slice(-3000)}\n---\n${restarted.output().slice(-3000)}`,
        );
      });
      await new Promise((resolve) => setTimeout(resolve, 300)); // a few more rounds of the worker
    } finally {
      await restarted.kill('SIGTERM');
    }
    await sync(true);
    const logs = await chain.publicClient.getContractEvents({
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      eventName: 'RefundRecorded',
      fromBlock: 0n,
    });
    expect(logs.filter((l) => l.args.ref === `refund:${refund}`)).toHaveLength(1);
    expect(await books(user)).toEqual({
      debtUsdc: 360n * USDC,
      unsettledCents: 0n,
      debtOnChain: 360n * USDC,
    });
    const [ledger] = await sql()`select count(*)::int as n from ledger_transfers t
      join chain_events ce on t.ref = 'chain:' || ce.chain_id || ':' || ce.block_hash || ':' || ce.log_index
      where t.kind = 'refund' and ce.args->>'ref' = ${`refund:${refund}`}`;
    expect(ledger?.['n']).toBe(1);
  }, 60_000);
});

describe('refunds across a reorg', () => {
  it('undoes a refund the reorg orphaned, then re-sends and books it once on the canonical chain', async () => {
    const user = await newUser(12);
    await chain.deposit(user.wallet, 'WETH', ETH);
    await sync(true);
    const spend = await authorize(user, 10_000);
    const capture = await transaction(user, 'capture', spend.authorizationId, 10_000);
    const refund = await transaction(user, 'refund', spend.authorizationId, 3_000);
    const before = await books(user);
    expect(before).toEqual({ debtUsdc: 0n, unsettledCents: 7_000n, debtOnChain: 0n });

    const fork = await chain.snapshot();
    expect(await worker().runOnce()).toMatchObject({ sent: 1, refundsSent: 1 });
    await sync();
    expect(await books(user)).toEqual({ debtUsdc: 70n * USDC, unsettledCents: 0n, debtOnChain: 70n * USDC });

    await chain.revert(fork); // fork A's blocks and transactions are gone
    await chain.mine(4);
    await sync();
    expect(await books(user)).toEqual(before);
    const statuses = await sql()`select (select status from settlements where ref = ${capture}) as spend,
      (select status from chain_refunds where ref = ${`refund:${refund}`}) as refund`;
    expect(statuses[0]).toEqual({ spend: 'sent', refund: 'sent' });

    expect(await worker({ resendAfterMs: 10 }).runOnce()).toMatchObject({
      reopened: 2,
      sent: 1,
      refundsSent: 1,
    });
    await sync(true);
    expect(await books(user)).toEqual({ debtUsdc: 70n * USDC, unsettledCents: 0n, debtOnChain: 70n * USDC });
    const logs = await chain.publicClient.getContractEvents({
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      eventName: 'RefundRecorded',
      fromBlock: 0n,
    });
    expect(logs.filter((l) => l.args.ref === `refund:${refund}`)).toHaveLength(1);
  });
});

describe('fee cap', () => {
  it('sends nothing while the base fee is above CHAIN_MAX_FEE_PER_GAS_GWEI, and says so', async () => {
    const user = await newUser(10);
    await chain.deposit(user.wallet, 'WETH', ETH);
    await sync(true);
    const spend = await authorize(user, 10_000);
    const ref = await transaction(user, 'capture', spend.authorizationId, 10_000);
    const metrics = createSettlementMetrics();
    const capped = worker({ maxFeePerGasWei: 50n * GWEI, metrics });
    const setBaseFee = async (wei: bigint) => {
      await chain.testClient.request({
        method: 'hardhat_setNextBlockBaseFeePerGas',
        params: [`0x${wei.toString(16)}`],
      } as never);
      await chain.mine(1);
    };
    await setBaseFee(80n * GWEI);
    expect(await capped.runOnce()).toMatchObject({ claimed: 1, sent: 0, feeCapped: true });
    expect((await metrics.feeAboveCap.get()).values[0]?.value).toBe(1);
    expect((await metrics.feeCapWaits.get()).values[0]?.value).toBe(1);
    const [row] = await sql()`select status from settlements where ref = ${ref}`;
    expect(row?.['status']).toBe('pending');

    await setBaseFee(1n * GWEI);
    expect(await capped.runOnce()).toMatchObject({ sent: 1, feeCapped: false });
    expect((await metrics.feeAboveCap.get()).values[0]?.value).toBe(0);
    const [sent] = await sql()`select transaction_hash from settlements where ref = ${ref}`;
    const tx = await chain.publicClient.getTransaction({ hash: sent?.['transaction_hash'] as Hex });
    expect(tx.maxFeePerGas).toBeLessThanOrEqual(50n * GWEI);
  });
});
