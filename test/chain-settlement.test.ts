// Proves a capture travels hot path → ledger writer → settlement worker → vault → indexer → on-chain
// debt exactly once on real services: in process, with the worker SIGKILLed right after broadcasting
// and right after saving (before broadcasting), and when the worker's own records are lost; a capture
// of a user without a wallet is booked to the receivable account and counted, never left failed.
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address } from 'viem';
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
import { createSettlementMetrics, createSettlementWorker } from '../settlement/index.ts';
import { credanaVaultAbi, writeContractsFile } from '../shared/chain/contracts/index.ts';
import { cardMovementEntries, insertTransfers } from '../shared/db/queries/ledger.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import { duplicateRedis } from '../shared/redis/client.ts';
import { ACCOUNT, userKeys } from '../shared/redis/keys.ts';
import { redisEnv, setUpServices, type TestServices } from './support/db.ts';
import { type HotPath, post, startHotPath } from './support/hot-path.ts';
import { authorizationRequest, transactionEvent } from './support/stripe.ts';

const ETH = 10n ** 18n;
let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let hotPath: HotPath;
let writer: LedgerWriter;
let userId: string;
let cardId: string;
let wallet: Address;
let contractsFile: string;

const sql = () => services.database.sql;
const nowS = () => Math.floor(Date.now() / 1000);
const settler = () => privateKeyToAccount(localAccount(ROLES.settler).privateKey);

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A real swipe and its capture, through the hot path and the ledger writer. Returns the capture id. */
async function captureSpend(amountCents: number): Promise<string> {
  const request = authorizationRequest({ cardId, amountCents });
  const decision = await post(hotPath, '/stripe/authorizations', request);
  expect(decision.json.approved).toBe(true);
  const transactionId = `ipi_${randomBytes(8).toString('hex')}`;
  const event = transactionEvent({
    cardId,
    type: 'capture',
    amountCents,
    authorizationId: request.data.object.id,
    createdS: nowS(),
    transactionId,
  });
  expect((await post(hotPath, '/stripe/events', event)).status).toBe(200);
  // Booked: the money, then (in a transaction of its own) the archived event that names the capture.
  await waitFor(
    async () =>
      (
        await sql()`select 1 from ledger_transfers t join card_events e on e.id = ${event.id}
          where t.kind = 'capture' and t.ref = ${`lifecycle:${event.id}`}`
      ).length === 1,
    'the ledger writer to book the capture and archive its event',
  );
  return transactionId;
}

/** SpendRecorded events on the chain, by ref. */
async function recordedOnChain(): Promise<Map<string, number>> {
  const logs = await chain.publicClient.getContractEvents({
    address: chain.contracts.vault,
    abi: credanaVaultAbi,
    eventName: 'SpendRecorded',
    fromBlock: 0n,
  });
  const counts = new Map<string, number>();
  for (const log of logs) counts.set(log.args.ref as string, (counts.get(log.args.ref as string) ?? 0) + 1);
  return counts;
}

async function books() {
  const [account] =
    await sql()`select debt_onchain_usdc::text as debt, unsettled_cents::text as uns from credit_accounts where user_id = ${userId}`;
  const cached = await services.redis.hgetall(userKeys(services.prefix, userId).account);
  return {
    debtUsdc: BigInt(account?.['debt'] as string),
    unsettledCents: BigInt(account?.['uns'] as string),
    cachedDebtUsdc: BigInt(cached[ACCOUNT.debtOnchainUsdc] ?? '0'),
    cachedUnsettledCents: BigInt(cached[ACCOUNT.unsettledCents] ?? '0'),
  };
}

/** Settlement ledger transfers booked for one capture (through the chain event that recorded it). */
const settlementTransfers = async (ref: string) =>
  (
    await sql()`select count(*)::int as n from ledger_transfers t
      join chain_events ce on t.ref = 'chain:' || ce.chain_id || ':' || ce.block_hash || ':' || ce.log_index
      where t.kind = 'settlement' and ce.args->>'ref' = ${ref}`
  )[0]?.['n'];

beforeAll(async () => {
  [services, chain] = await Promise.all([setUpServices(), startChainHarness()]);
  await seedAssets(sql(), chain.contracts);
  wallet = chain.account(3);
  userId = await seedUser(sql(), { chainId: chain.contracts.chainId, wallet, creditLimitCents: 10_000_000n });
  cardId = `ic_${randomBytes(8).toString('hex')}`;
  await sql()`insert into cards (id, user_id) values (${cardId}, ${userId})`;
  await ensureAccount(services.redis, sql(), services.prefix, userId);
  ({ indexer } = createTestIndexer(services, chain, { confirmations: 2 }));
  await chain.deposit(wallet, 'WETH', 2n * ETH);
  await chain.mine(2);
  await indexer.syncToHead();
  hotPath = await startHotPath(services);
  writer = createLedgerWriter({
    redis: duplicateRedis(services.redis),
    sql: services.sqlFor('credana_ledger_writer'),
    prefix: services.prefix,
    consumer: 'chain-settlement-test',
    batchMax: 50,
    batchWaitMs: 10,
    metrics: createLedgerWriterMetrics(),
  });
  await writer.start();
  contractsFile = join(mkdtempSync(join(tmpdir(), 'credana-settle-')), 'contracts.json');
  writeContractsFile(contractsFile, chain.contracts);
});

afterAll(async () => {
  await writer?.stop();
  await hotPath?.close();
  await indexer?.stop();
  await chain?.stop();
  await services?.close();
});

describe('settlement', () => {
  it('moves a capture from unsettled to on-chain debt exactly once', async () => {
    const before = await books();
    const availableBefore = (
      await cachedCredit(services.redis, sql(), services.prefix, 31_337, userId, nowS())
    ).availableCents;
    const ref = await captureSpend(12_345);
    const captured = await books();
    expect(captured.unsettledCents - before.unsettledCents).toBe(12_345n);
    expect(captured.cachedUnsettledCents).toBe(captured.unsettledCents);

    const worker = createSettlementWorker({
      sql: services.sqlFor('credana_settlement'),
      client: chain.publicClient,
      account: settler(),
      vault: chain.contracts.vault,
      chainId: chain.contracts.chainId,
      logger: silentLogger,
      maxFeePerGasWei: 200n * 10n ** 9n,
    });
    const report = await worker.runOnce();
    expect(report).toMatchObject({ claimed: 1, sent: 1, batches: 1 });
    const [row] = await sql()`select ref, status, amount_usdc::text from settlements where ref = ${ref}`;
    expect(row).toMatchObject({ ref, status: 'sent', amount_usdc: '123450000' });

    await indexer.syncToHead(); // a recorded spend is debt at first sight
    const settled = await books();
    expect(settled.debtUsdc - before.debtUsdc).toBe(123_450_000n);
    expect(settled.unsettledCents).toBe(before.unsettledCents);
    expect(settled.cachedDebtUsdc).toBe(settled.debtUsdc);
    expect(settled.cachedUnsettledCents).toBe(settled.unsettledCents);
    expect(await settlementTransfers(ref)).toBe(1);
    // The move from unsettled to debt leaves the user's available credit where the capture put it.
    const available = (await cachedCredit(services.redis, sql(), services.prefix, 31_337, userId, nowS()))
      .availableCents;
    expect(available).toBe(availableBefore - 12_345n);

    // Running everything again changes nothing.
    expect(await worker.runOnce()).toMatchObject({ claimed: 0, sent: 0 });
    await chain.mine(2);
    await indexer.syncToHead();
    expect(await books()).toEqual(settled);
    expect((await recordedOnChain()).get(ref)).toBe(1);
  });

  it('records each capture once when the worker is killed after broadcasting, or after saving before it', async () => {
    const before = await books();
    const env = {
      DATABASE_URL: services.urlFor('credana_settlement'),
      CHAIN_RPC_URL: chain.url,
      CHAIN_ID: String(chain.contracts.chainId),
      CONTRACTS_FILE: contractsFile,
      SETTLER_PRIVATE_KEY: localAccount(ROLES.settler).privateKey,
      ...redisEnv(services),
      REDIS_KEY_PREFIX: services.prefix,
      LOG_LEVEL: 'info',
    };
    const broadcastRefs = [await captureSpend(1_000), await captureSpend(2_000)];
    const crashedAfterBroadcast = spawnSettlement(env, [
      '--crash-after',
      'broadcast',
      '--poll-interval-ms',
      '50',
    ]);
    expect(await crashedAfterBroadcast.exited).toBe('SIGKILL');
    const [sentTx] =
      await sql()`select distinct transaction_hash from settlements where ref = any(${broadcastRefs}::text[]) and status = 'sent'`;
    const txHash = sentTx?.['transaction_hash'] as `0x${string}`;
    expect((await chain.publicClient.getTransactionReceipt({ hash: txHash })).status).toBe('success');

    const savedRefs = [await captureSpend(3_000)];
    const crashedAfterSave = spawnSettlement(env, ['--crash-after', 'save', '--poll-interval-ms', '50']);
    expect(await crashedAfterSave.exited).toBe('SIGKILL');
    const [saved] =
      await sql()`select status, transaction_hash from settlements where ref = ${savedRefs[0] as string}`;
    expect(saved?.['status']).toBe('sent');
    // Saved as sent, but never broadcast: the node has never heard of it.
    await expect(
      chain.publicClient.getTransaction({ hash: saved?.['transaction_hash'] as `0x${string}` }),
    ).rejects.toThrow();

    const all = [...broadcastRefs, ...savedRefs];
    const restarted = spawnSettlement(env, ['--poll-interval-ms', '50', '--resend-after-ms', '300']);
    try {
      await waitFor(
        async () => {
          await indexer.syncToHead();
          const rows =
            await sql()`select count(*)::int as n from settlements where ref = any(${all}::text[]) and status = 'confirmed'`;
          return rows[0]?.['n'] === all.length;
        },
        'every settlement to be confirmed by the indexer',
        60_000,
      );
    } finally {
      await restarted.kill('SIGTERM');
    }
    const onChain = await recordedOnChain();
    for (const ref of all) expect(onChain.get(ref)).toBe(1);
    const after = await books();
    expect(after.debtUsdc - before.debtUsdc).toBe(6_000n * 10_000n);
    expect(after.unsettledCents).toBe(before.unsettledCents);
    expect(after.cachedUnsettledCents).toBe(after.unsettledCents);
    expect(after.cachedDebtUsdc).toBe(after.debtUsdc);
    for (const ref of all) expect(await settlementTransfers(ref)).toBe(1);
  }, 120_000);

  it('settles captures booked as `capture:<ipi>` too, and books those of users without a wallet to the receivable account', async () => {
    // The shape the brief names for the ledger writer's captures: a balanced transfer in ONE statement.
    const book = async (owner: string, ref: string, cents: bigint) => {
      const [transfer] =
        await sql()`insert into ledger_transfers (ref, kind, user_id) values (${ref}, 'capture', ${owner}) returning id`;
      await sql()`insert into ledger_entries (transfer_id, account, user_id, amount_cents) values
        (${transfer?.['id'] as string}, 'user_unsettled', ${owner}, ${cents.toString()}),
        (${transfer?.['id'] as string}, 'program_card_spend', null, ${(-cents).toString()})`;
      await sql()`update credit_accounts set unsettled_cents = unsettled_cents + ${cents.toString()} where user_id = ${owner}`;
    };
    const ipi = `ipi_${randomBytes(8).toString('hex')}`;
    await book(userId, `capture:${ipi}`, 777n);
    const walletless = await seedUser(sql(), { chainId: chain.contracts.chainId });
    const orphan = `ipi_${randomBytes(8).toString('hex')}`;
    await book(walletless, `capture:${orphan}`, 500n);
    const before = await books();
    const metrics = createSettlementMetrics();
    const worker = createSettlementWorker({
      sql: services.sqlFor('credana_settlement'),
      client: chain.publicClient,
      account: settler(),
      vault: chain.contracts.vault,
      chainId: chain.contracts.chainId,
      logger: silentLogger,
      maxFeePerGasWei: 200n * 10n ** 9n,
      metrics,
    });
    expect(await worker.runOnce()).toMatchObject({ claimed: 2, sent: 1 });
    await indexer.syncToHead();
    const rows =
      await sql()`select ref, status, last_error from settlements where ref = any(${[ipi, orphan]}::text[]) order by ref = ${ipi}`;
    expect(rows).toEqual([
      { ref: orphan, status: 'receivable', last_error: 'no linked wallet on this chain' },
      { ref: ipi, status: 'confirmed', last_error: null },
    ]);
    // Booked, not dropped: the cents left unsettled for the named receivable account, once.
    const legs = await sql()`select e.account, e.amount_cents::text from ledger_transfers t
      join ledger_entries e on e.transfer_id = t.id where t.ref = ${`receivable:${orphan}`} order by e.account`;
    expect(legs).toEqual([
      { account: 'user_receivable_unlinked', amount_cents: '500' },
      { account: 'user_unsettled', amount_cents: '-500' },
    ]);
    const [walletlessAccount] =
      await sql()`select unsettled_cents::text as uns from credit_accounts where user_id = ${walletless}`;
    expect(walletlessAccount?.['uns']).toBe('0');
    expect((await metrics.receivables.get()).values[0]?.value).toBe(1); // the alert's metric
    expect(await worker.runOnce()).toMatchObject({ receivables: 0 });
    expect((await metrics.receivables.get()).values[0]?.value).toBe(1);
    const after = await books();
    expect(after.debtUsdc - before.debtUsdc).toBe(7_770_000n);
    expect(before.unsettledCents - after.unsettledCents).toBe(777n);
  });

  it('cannot record a capture twice even when the worker lost its own records (the vault refuses the ref)', async () => {
    const [done] =
      await sql()`select ref from settlements where status = 'confirmed' order by created_at limit 1`;
    const ref = done?.['ref'] as string;
    const before = await books();
    const onChainBefore = await recordedOnChain();
    // As if the worker had never saved anything about this capture.
    await sql()`update settlements set status = 'pending', transaction_hash = null where ref = ${ref}`;
    const worker = createSettlementWorker({
      sql: services.sqlFor('credana_settlement'),
      client: chain.publicClient,
      account: settler(),
      vault: chain.contracts.vault,
      chainId: chain.contracts.chainId,
      logger: silentLogger,
      maxFeePerGasWei: 200n * 10n ** 9n,
    });
    expect(await worker.runOnce()).toMatchObject({ sent: 1 }); // it did send again…
    const [row] = await sql()`select transaction_hash from settlements where ref = ${ref}`;
    const receipt = await chain.publicClient.getTransactionReceipt({
      hash: row?.['transaction_hash'] as `0x${string}`,
    });
    expect(receipt.status).toBe('success');
    expect(receipt.logs).toHaveLength(0); // …and the vault skipped the ref: no event, no debt
    await chain.mine(2);
    await indexer.syncToHead();
    expect(await recordedOnChain()).toEqual(onChainBefore);
    expect(await books()).toEqual(before);
  });

  it('claims a capture only once its event is archived, and then by its transaction id', async () => {
    // The ledger writer commits a capture's money before its raw event (their own transactions): in
    // between, the capture's transaction id is not known yet. Booked here as the writer books it.
    const eventId = `evt_archive_${randomBytes(6).toString('hex')}`;
    const transactionId = `ipi_${randomBytes(8).toString('hex')}`;
    await sql().begin(async (tx) => {
      await insertTransfers(tx, [
        {
          ref: `lifecycle:${eventId}`,
          kind: 'capture',
          userId,
          authorizationId: null,
          entries: cardMovementEntries(userId, { holdDeltaCents: 0n, unsettledDeltaCents: 9_137n }),
        },
      ]);
    });
    const worker = createSettlementWorker({
      sql: services.sqlFor('credana_settlement'),
      client: chain.publicClient,
      account: settler(),
      vault: chain.contracts.vault,
      chainId: chain.contracts.chainId,
      logger: silentLogger,
      maxFeePerGasWei: 200n * 10n ** 9n,
    });
    await worker.runOnce();
    const claimed = async () =>
      sql()`select ref from settlements where amount_cents = 9137 order by ref`.then((rows) =>
        rows.map((r) => r['ref'] as string),
      );
    expect(await claimed()).toEqual([]);
    await sql()`insert into card_events (id, type, user_id, object_id, payload, created_at)
      values (${eventId}, 'issuing_transaction.created', ${userId}, ${transactionId}, '{}'::jsonb, now())`;
    await worker.runOnce();
    await worker.runOnce();
    expect(await claimed()).toEqual([transactionId]);
  });
});
