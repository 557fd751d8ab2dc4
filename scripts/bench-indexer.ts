/**
 * `npm run bench:indexer`: backfill throughput of the indexer against the raw getLogs-and-decode rate
 * of the same node, in one run. Starts a local Hardhat chain, makes ≥ 50,000 real vault and feed
 * events (deposits, recorded spends, repayments, price rounds), then times
 *   1. raw: eth_getLogs over the whole range in the indexer's chunk size, decoded with viem (the ceiling);
 *   2. the indexer: a cold backfill into a freshly migrated database with Redis write-through;
 *   3. raw again (the better raw run is reported, so the ratio is never flattered by a cold node).
 * Prints a table and writes bench/indexer.json { eventsPerS, rawGetLogsEventsPerS, ratio, events, … }.
 *
 * Uses DATABASE_URL's server (a throwaway database beside it) and REDIS_URL (a throwaway prefix).
 * Flags: --events N (default 51,000, minimum 50,000), --range N (initial getLogs range, default 25 blocks).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import type { Address } from 'viem';
import { z } from 'zod';
import { createIndexer } from '../indexer/runtime/index.ts';
import { createSync } from '../indexer/sync/index.ts';
import { benchBatcherAbi, credanaVaultAbi } from '../shared/chain/contracts/index.ts';
import { LIMITS } from '../shared/chain/limits.ts';
import { classifyRpcError, createRpc, RangeTooLargeError } from '../shared/chain/rpc/index.ts';
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import { createServiceRedis, deletePrefix } from '../shared/redis/client.ts';
import { localAccount, ROLES, seedAssets, seedUser, startChainHarness } from './chain/harness.ts';
import { silentLogger } from './chain/testing.ts';

const flags = z
  .object({
    events: z.coerce.number().int().min(50_000).max(1_000_000).default(51_000),
    range: z.coerce.number().int().min(1).max(10_000).default(25),
  })
  .parse(parseArgs({ options: { events: { type: 'string' }, range: { type: 'string' } } }).values);

// A local tool: NODE_ENV=development unless set (shared/config.ts, ConfigFromProcessOptions).
const config = configFromProcess({}, { localTool: true });
const root = resolve(import.meta.dirname, '..');
const say = (line: string) => process.stdout.write(`${line}\n`);
const seconds = (fromMs: number) => (performance.now() - fromMs) / 1000;

// ── A chain with enough events ───────────────────────────────────────────────────────────────────
const chain = await startChainHarness({ withBatcher: true });
const batcher = chain.contracts.batcher as Address;
const WALLETS = 300;
const LINKED = 250;
const wallets: Address[] = Array.from(
  { length: WALLETS },
  (_, i) => `0x${(0xbe0c0000 + i).toString(16).padStart(40, '0')}` as Address,
);
const deployer = localAccount(ROLES.deployer).address;
const settler = localAccount(ROLES.settler).address;
const send = async (from: Address, to: Address, abi: unknown, functionName: string, args: unknown[]) => {
  const { encodeFunctionData } = await import('viem');
  const data = encodeFunctionData({ abi, functionName, args } as Parameters<typeof encodeFunctionData>[0]);
  const hash = await chain.publicClient.request({
    method: 'eth_sendTransaction',
    params: [{ from, to, data, gas: '0x1c9c380' }],
  } as never);
  const receipt = await chain.publicClient.getTransactionReceipt({ hash: hash as `0x${string}` });
  if (receipt.status !== 'success') throw new Error(`${functionName} reverted`);
};

const generationStart = performance.now();
const target = flags.events;
const deposits = Math.round(target * 0.3);
const spends = Math.round(target * 0.58);
const repays = Math.round(target * 0.1);
const prices = target - deposits - spends - repays;
say(
  `bench:indexer: generating ${target} events on ${chain.url} (deposits ${deposits}, spends ${spends}, repayments ${repays}, price rounds ${prices})…`,
);
const pick = (i: number) => wallets[(i * 7919) % WALLETS] as Address;
for (let done = 0; done < deposits; done += 100) {
  const n = Math.min(100, deposits - done);
  const users = Array.from({ length: n }, (_, i) => pick(done + i));
  const assetId = (done / 100) % 2 === 0 ? 'WETH' : 'WBTC';
  await chain.depositMany(
    assetId,
    users,
    users.map((_, i) => 10n ** 16n + BigInt(done + i)),
  );
}
for (let done = 0; done < spends; done += 300) {
  const n = Math.min(300, spends - done);
  const users = Array.from({ length: n }, (_, i) => pick(done + i));
  await send(settler, chain.contracts.vault, credanaVaultAbi, 'recordSpends', [
    users,
    users.map((_, i) => 1_000_000n + BigInt(i)),
    users.map((_, i) => `ipi_bench_${done + i}_${randomBytes(6).toString('hex')}`),
  ]);
}
for (let done = 0; done < repays; done += 200) {
  const n = Math.min(200, repays - done);
  const users = Array.from({ length: n }, (_, i) => pick(done + i));
  await send(deployer, batcher, benchBatcherAbi, 'repayMany', [
    chain.contracts.vault,
    chain.contracts.usdc.address,
    users,
    users.map(() => 1_000n),
  ]);
}
for (let i = 0; i < prices; i++)
  await chain.setPrice(i % 2 === 0 ? 'WETH' : 'WBTC', 3_000_00000000n - BigInt(i));
const head = await chain.mine(3);
const from = BigInt(chain.contracts.deployBlock);
say(`bench:indexer: chain ready in ${seconds(generationStart).toFixed(1)} s: blocks ${from}..${head}`);

// ── Raw ceiling: getLogs + decode, same node, same chunking ──────────────────────────────────────
const rawRpc = createRpc({
  url: chain.url,
  chainId: chain.contracts.chainId,
  requestsPerSMax: 100_000,
  burstMax: 10_000,
});
const rawSync = createSync({
  client: rawRpc.client,
  vault: chain.contracts.vault,
  aggregators: chain.contracts.assets.map((a) => a.aggregator),
  reorgDepthMax: config.REORG_DEPTH_MAX,
});
async function rawRun(): Promise<{ events: number; s: number }> {
  const started = performance.now();
  let events = 0;
  let range = BigInt(flags.range);
  for (let at = from; at <= head; ) {
    const to = at + range - 1n < head ? at + range - 1n : head;
    let logs: Awaited<ReturnType<typeof rawSync.getDecodedLogs>>;
    try {
      logs = await rawSync.getDecodedLogs(at, to);
    } catch (error) {
      if (!(classifyRpcError(error) instanceof RangeTooLargeError) || range === 1n) throw error;
      range /= 2n;
      continue;
    }
    events += logs.length;
    // The same adaptive rule the indexer applies (sync/index.ts), so both read the node in similar chunks.
    if (logs.length > LIMITS.logsPerRangeMax && range > 1n) range /= 2n;
    else if (logs.length < LIMITS.logsPerRangeMax / 4 && range < BigInt(LIMITS.blockRangeMax)) range *= 2n;
    at = to + 1n;
  }
  return { events, s: seconds(started) };
}
const rawFirst = await rawRun();
say(`bench:indexer: raw getLogs+decode: ${rawFirst.events} events in ${rawFirst.s.toFixed(2)} s`);

// ── The indexer: cold backfill into a fresh database, Redis write-through on ─────────────────────
const dbName = `credana_bench_${randomBytes(4).toString('hex')}`;
const dbUrl = new URL(config.DATABASE_URL);
dbUrl.pathname = `/${dbName}`;
await ensureDatabase(dbUrl.toString());
await migrateDatabase(dbUrl.toString());
const database = createDatabase({
  url: dbUrl.toString(),
  poolMax: 5,
  applicationName: 'bench-indexer',
  statementTimeoutMs: 60_000,
});
const redis = createServiceRedis(config, { connectionName: 'bench-indexer' });
const prefix = `bench${randomBytes(3).toString('hex')}:`;
let result: { eventsPerS: number; rawGetLogsEventsPerS: number; ratio: number; events: number } | null = null;
try {
  await seedAssets(database.sql, chain.contracts);
  for (let i = 0; i < LINKED; i++) {
    const userId = await seedUser(database.sql, {
      chainId: chain.contracts.chainId,
      wallet: wallets[i] as Address,
      userId: randomUUID(),
    });
    await ensureAccount(redis, database.sql, prefix, userId);
  }
  const rpc = createRpc({
    url: chain.url,
    chainId: chain.contracts.chainId,
    requestsPerSMax: 100_000,
    burstMax: 10_000,
  });
  const indexer = createIndexer({
    sql: database.sql,
    redis,
    prefix,
    logger: silentLogger,
    client: rpc.client,
    contracts: chain.contracts,
    chainId: chain.contracts.chainId,
    confirmations: config.CHAIN_CONFIRMATIONS,
    reorgDepthMax: config.REORG_DEPTH_MAX,
    blockRangeInitial: flags.range,
  });
  await indexer.init();
  const started = performance.now();
  await indexer.syncToHead();
  const indexedS = seconds(started);
  const [stored] = await database.sql<{ n: number }[]>`select count(*)::int as n from chain_events`;
  const events = stored?.n ?? 0;
  const rawSecond = await rawRun();
  if (events !== rawFirst.events || rawSecond.events !== rawFirst.events) {
    throw new Error(`event counts differ: indexed ${events}, raw ${rawFirst.events} / ${rawSecond.events}`);
  }
  const rawS = Math.min(rawFirst.s, rawSecond.s);
  const eventsPerS = Math.round(events / indexedS);
  const rawGetLogsEventsPerS = Math.round(events / rawS);
  result = {
    eventsPerS,
    rawGetLogsEventsPerS,
    ratio: Math.round((eventsPerS / rawGetLogsEventsPerS) * 1000) / 1000,
    events,
  };
  say('');
  say('| measure                          | events | seconds | events/s |');
  say('| -------------------------------- | -----: | ------: | -------: |');
  say(`| raw getLogs + decode (ceiling)   | ${events} | ${rawS.toFixed(2)} | ${rawGetLogsEventsPerS} |`);
  say(`| indexer backfill (PG + Redis)    | ${events} | ${indexedS.toFixed(2)} | ${eventsPerS} |`);
  say(
    `ratio ${result.ratio} (goal ≥ 0.5); blocks ${head - from + 1n}; linked wallets ${LINKED}/${WALLETS}; ${os.cpus().length} CPUs`,
  );
  mkdirSync(join(root, 'bench'), { recursive: true });
  writeFileSync(
    join(root, 'bench', 'indexer.json'),
    `${JSON.stringify(
      {
        ...result,
        indexerSeconds: Math.round(indexedS * 1000) / 1000,
        rawSeconds: Math.round(rawS * 1000) / 1000,
        blocks: Number(head - from + 1n),
        node: 'hardhat 2.29.1 (hardhat node, HTTP)',
        confirmations: config.CHAIN_CONFIRMATIONS,
        reorgDepthMax: config.REORG_DEPTH_MAX,
        initialRangeBlocks: flags.range,
        cpus: os.cpus().length,
        at: new Date().toISOString(),
      },
      null,
      2,
    )}\n`,
  );
  say('wrote bench/indexer.json');
} finally {
  await deletePrefix(redis, prefix);
  redis.disconnect();
  await database.close();
  const adminUrl = new URL(config.DATABASE_URL);
  adminUrl.pathname = '/postgres';
  const admin = postgres(adminUrl.toString(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
  await admin.end({ timeout: 5 });
  await chain.stop();
}
if (result !== null && result.ratio < 0.5) process.exitCode = 1;
