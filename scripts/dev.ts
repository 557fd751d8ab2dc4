/**
 * `npm run dev`: the whole system on its defaults, no manual steps —
 *  1. Postgres and Redis at DATABASE_URL / REDIS_URL when they answer (a Redis it can start itself
 *     from `redis-server` on PATH otherwise, with AOF `always` as docs/ledger.md recommends; Postgres
 *     must be installed — one line says how);
 *  2. the financial database migrated, the Supabase-local database bootstrapped and migrated;
 *  3. a local Hardhat chain (reused when CHAIN_RPC_URL answers) with the contracts deployed;
 *  4. every service as a child process: hot path, ledger writer, indexer, settlement worker, Supabase
 *     sync, reconciliation scheduler;
 *  5. demo users with cards, linked wallets and WETH deposited on-chain (credit appears once the
 *     indexer has seen the confirmations);
 * then prints a summary and writes it to .dev/stack.json. Ctrl-C stops everything it started.
 * A second run reuses the databases, the chain and the demo users.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import postgres from 'postgres';
import { encodeFunctionData, type Hex } from 'viem';
import { deployLocalContracts, localClients } from '../indexer/chain/deploy.ts';
import { localAccount, ROLES, seedAssets } from '../indexer/chain/harness.ts';
import { startLocalChain } from '../indexer/chain/node.ts';
import { credanaVaultAbi, testTokenAbi } from '../indexer/contracts/abis.ts';
import { type ContractsFile, readContractsFile, writeContractsFile } from '../indexer/contracts/index.ts';
import { configFromProcess } from '../shared/config.ts';
import { computeCredit } from '../shared/credit.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { createRedis } from '../shared/redis/client.ts';
import { ACCOUNT, assetsKey, pricesKey, userKeys } from '../shared/redis/keys.ts';
import { parseAsset, parsePrice } from '../shared/redis/market.ts';
import { applySupabaseMigrations } from '../supabase/migrate.ts';

const config = configFromProcess();
const children: ChildProcess[] = [];
const say = (line: string) => process.stdout.write(`dev: ${line}\n`);

function stopAll(code: number): never {
  for (const child of children.reverse()) if (child.exitCode === null) child.kill('SIGTERM');
  process.exit(code);
}
process.on('SIGINT', () => stopAll(0));
process.on('SIGTERM', () => stopAll(0));

async function answers(check: () => Promise<unknown>): Promise<boolean> {
  try {
    await check();
    return true;
  } catch {
    return false;
  }
}

async function pingRedis(url: string): Promise<void> {
  const probe = createRedis({ url, offlineQueue: false });
  try {
    for (let i = 0; i < 20 && probe.status !== 'ready'; i++) await new Promise((r) => setTimeout(r, 50));
    await probe.ping();
  } finally {
    probe.disconnect();
  }
}

// 1. Postgres and Redis.
const adminUrl = new URL(config.DATABASE_URL);
adminUrl.pathname = '/postgres';
if (
  !(await answers(async () => {
    const admin = postgres(adminUrl.toString(), { max: 1, connect_timeout: 3, onnotice: () => {} });
    try {
      await admin`select 1`;
    } finally {
      await admin.end({ timeout: 1 });
    }
  }))
) {
  process.stderr.write(
    `dev: PostgreSQL at ${adminUrl.host} does not answer. Install and start it (Debian: apt-get install postgresql && pg_ctlcluster 15 main start) or set DATABASE_URL.\n`,
  );
  process.exit(1);
}
if (!(await answers(() => pingRedis(config.REDIS_URL)))) {
  const redisUrl = new URL(config.REDIS_URL);
  const which = spawnSync('sh', ['-c', 'command -v redis-server']);
  if (which.status !== 0) {
    process.stderr.write(
      `dev: Redis at ${redisUrl.host} does not answer and redis-server is not on PATH. Install it (Debian: apt-get install redis-server) or set REDIS_URL.\n`,
    );
    process.exit(1);
  }
  mkdirSync('.dev/redis', { recursive: true });
  say(`starting redis-server on ${redisUrl.port || 6379} (data in .dev/redis, AOF always)`);
  children.push(
    spawn(
      'redis-server',
      [
        '--port',
        redisUrl.port || '6379',
        '--bind',
        '127.0.0.1',
        '--dir',
        path.resolve('.dev/redis'),
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
      ],
      {
        stdio: 'ignore',
      },
    ),
  );
  for (let i = 0; i < 100 && !(await answers(() => pingRedis(config.REDIS_URL))); i++)
    await new Promise((r) => setTimeout(r, 100));
}

// 2. Databases.
await ensureDatabase(config.DATABASE_URL);
await migrateDatabase(config.DATABASE_URL);
await ensureDatabase(config.SUPABASE_DB_URL);
{
  const sb = postgres(config.SUPABASE_DB_URL, { max: 1, onnotice: () => {} });
  const [auth] = await sb<{ present: boolean }[]>`select to_regclass('auth.users') is not null as present`;
  if (auth?.present !== true) {
    // No hosted Supabase here: the test bootstrap stands in for what its platform provides (auth schema,
    // auth.uid()/auth.jwt(), the anon/authenticated/service_role roles). Never part of the migrations.
    await sb.unsafe(readFileSync('supabase/tests/bootstrap.sql', 'utf8'));
  }
  await sb.end();
}
await applySupabaseMigrations(config.SUPABASE_DB_URL);
say('databases migrated (financial and Supabase-local)');

// 3. Chain.
const rpc = new URL(config.CHAIN_RPC_URL);
const chainUp = await answers(async () => {
  const res = await fetch(config.CHAIN_RPC_URL, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
  });
  if (!res.ok) throw new Error('no chain');
});
if (!chainUp) {
  const chain = await startLocalChain({ host: rpc.hostname, port: Number(rpc.port || 8545) });
  children.push(chain.child);
  say(`local Hardhat chain at ${chain.url}`);
}
const { publicClient } = localClients(config.CHAIN_RPC_URL);
let contracts: ContractsFile | null = existsSync(config.CONTRACTS_FILE)
  ? readContractsFile(config.CONTRACTS_FILE)
  : null;
if (contracts === null || (await publicClient.getCode({ address: contracts.vault })) === undefined) {
  contracts = await deployLocalContracts({
    rpcUrl: config.CHAIN_RPC_URL,
    deployer: localAccount(ROLES.deployer).address,
    settler: localAccount(ROLES.settler).address,
    liquidator: localAccount(ROLES.liquidator).address,
    withdrawalDelayS: 3_600,
  });
  mkdirSync(path.dirname(config.CONTRACTS_FILE), { recursive: true });
  writeContractsFile(config.CONTRACTS_FILE, contracts);
  say(`contracts deployed (vault ${contracts.vault}), addresses in ${config.CONTRACTS_FILE}`);
}
const sql = postgres(config.DATABASE_URL, { max: 2, onnotice: () => {} });
await seedAssets(sql, contracts);

// 4. Services.
const childEnv: Record<string, string> = {
  PATH: process.env['PATH'] ?? '',
  NODE_ENV: config.NODE_ENV,
  LOG_LEVEL: config.LOG_LEVEL,
  DATABASE_URL: config.DATABASE_URL,
  REDIS_URL: config.REDIS_URL,
  REDIS_KEY_PREFIX: config.REDIS_KEY_PREFIX,
  STRIPE_WEBHOOK_SECRETS: config.STRIPE_WEBHOOK_SECRETS.join(','),
  HOT_PATH_PORT: String(config.HOT_PATH_PORT),
  CHAIN_RPC_URL: config.CHAIN_RPC_URL,
  CONTRACTS_FILE: config.CONTRACTS_FILE,
  SUPABASE_DB_URL: config.SUPABASE_DB_URL,
  SETTLER_PRIVATE_KEY: config.SETTLER_PRIVATE_KEY ?? localAccount(ROLES.settler).privateKey,
};
async function start(name: string, entry: string, ready: string, args: string[] = []): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  const collect = (chunk: Buffer) => {
    out = (out + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const until = Date.now() + 90_000;
  while (!out.includes(ready)) {
    if (child.exitCode !== null || Date.now() > until) {
      process.stderr.write(`dev: ${name} did not start:\n${out.slice(-3_000)}\n`);
      stopAll(1);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.on('exit', (code) => {
    if (code !== 0 && code !== null)
      process.stderr.write(`dev: ${name} exited with ${code}\n${out.slice(-2_000)}\n`);
  });
  say(`${name} is up`);
}
await start('hot path', 'hot-path/main.ts', 'hot-path ready');
await start('ledger writer', 'hot-path/ledger-writer/main.ts', 'ledger-writer ready');
await start('indexer', 'indexer/main.ts', 'indexer ready');
await start('settlement worker', 'indexer/settlement/main.ts', 'settlement worker started');
await start('Supabase sync', 'scripts/start-supabase-sync.ts', 'supabase-sync ready');
await start('scheduler', 'scripts/scheduler.ts', 'scheduler: listening');

// 5. Demo users: card, linked wallet, 2 WETH deposited on-chain (idempotent by fixed ids).
const { walletClient } = localClients(config.CHAIN_RPC_URL);
const weth = contracts.assets.find((a) => a.assetId === 'WETH') ?? contracts.assets[0]!;
const DEMO = [
  {
    userId: '00000000-0000-4000-8000-000000000001',
    cardId: 'ic_demo_alice',
    account: ROLES.firstUser,
    amount: 2n * 10n ** 18n,
  },
  {
    userId: '00000000-0000-4000-8000-000000000002',
    cardId: 'ic_demo_bob',
    account: ROLES.firstUser + 1,
    amount: 5n * 10n ** 17n,
  },
];
async function send(from: Hex, to: Hex, data: Hex): Promise<void> {
  const hash = await walletClient.request({
    method: 'eth_sendTransaction',
    params: [{ from, to, data }],
  } as never);
  await publicClient.waitForTransactionReceipt({ hash: hash as Hex });
}
for (const demo of DEMO) {
  const wallet = localAccount(demo.account).address;
  const [existing] = await sql<{ id: string }[]>`select id from users where id = ${demo.userId}`;
  if (existing !== undefined) continue;
  await sql`insert into users (id, credit_limit_cents, daily_limit_cents)
    values (${demo.userId}, ${config.CREDIT_LIMIT_CENTS_DEFAULT.toString()}, ${config.DAILY_LIMIT_CENTS_DEFAULT.toString()})`;
  await sql`insert into credit_accounts (user_id) values (${demo.userId}) on conflict do nothing`;
  await sql`insert into cards (id, user_id) values (${demo.cardId}, ${demo.userId}) on conflict (id) do nothing`;
  await sql`insert into wallets (chain_id, address, user_id) values (${contracts.chainId}, ${wallet.toLowerCase()}, ${demo.userId})
    on conflict do nothing`;
  await send(
    wallet,
    weth.token,
    encodeFunctionData({ abi: testTokenAbi, functionName: 'mint', args: [wallet, demo.amount] }),
  );
  await send(
    wallet,
    weth.token,
    encodeFunctionData({ abi: testTokenAbi, functionName: 'approve', args: [contracts.vault, demo.amount] }),
  );
  await send(
    wallet,
    contracts.vault,
    encodeFunctionData({ abi: credanaVaultAbi, functionName: 'deposit', args: [weth.token, demo.amount] }),
  );
}
// Deposits count after CHAIN_CONFIRMATIONS blocks: mine them, then wait for the indexer.
for (let i = 0; i < config.CHAIN_CONFIRMATIONS + 1; i++)
  await publicClient.request({ method: 'evm_mine', params: [] } as never);
const redis = createRedis({ url: config.REDIS_URL });
const users = [];
for (const demo of DEMO) {
  let availableCents = 0n;
  for (let i = 0; i < 300; i++) {
    const [position] = await sql<{ collateral_base: string }[]>`
      select collateral_base::text from positions where user_id = ${demo.userId} and asset_id = ${weth.assetId}`;
    if (position !== undefined && BigInt(position.collateral_base) > 0n) {
      const [assetJson, priceJson, account] = await Promise.all([
        redis.hget(assetsKey(config.REDIS_KEY_PREFIX), weth.assetId),
        redis.hget(pricesKey(config.REDIS_KEY_PREFIX), weth.assetId),
        redis.hgetall(userKeys(config.REDIS_KEY_PREFIX, demo.userId).account),
      ]);
      if (assetJson !== null && priceJson !== null) {
        const asset = parseAsset(assetJson);
        const { quote } = parsePrice(priceJson);
        availableCents = computeCredit({
          holdings: [
            {
              assetId: weth.assetId,
              amountBase: BigInt(position.collateral_base),
              pendingWithdrawalBase: 0n,
            },
          ],
          assets: new Map([[asset.assetId, asset]]),
          prices: new Map([[asset.assetId, quote]]),
          nowS: Math.floor(Date.now() / 1000),
          debtOnchainUsdc: BigInt(account[ACCOUNT.debtOnchainUsdc] ?? '0'),
          unsettledCents: BigInt(account[ACCOUNT.unsettledCents] ?? '0'),
          holdsCents: BigInt(account[ACCOUNT.holdsCents] ?? '0'),
          creditLimitCents: config.CREDIT_LIMIT_CENTS_DEFAULT,
        }).availableCents;
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  users.push({
    userId: demo.userId,
    cardId: demo.cardId,
    wallet: localAccount(demo.account).address,
    availableCents: Number(availableCents),
  });
}
redis.disconnect();
await sql.end();

const base = `http://${config.HOT_PATH_HOST}:${config.HOT_PATH_PORT}`;
const summary = {
  hotPath: {
    baseUrl: base,
    authorizationUrl: `${base}/stripe/authorizations`,
    eventsUrl: `${base}/stripe/events`,
    metricsUrl: `${base}/metrics`,
  },
  stripe: { webhookSecret: config.STRIPE_WEBHOOK_SECRETS[0], apiVersion: config.STRIPE_API_VERSION },
  chain: {
    rpcUrl: config.CHAIN_RPC_URL,
    chainId: contracts.chainId,
    vault: contracts.vault,
    contractsFile: config.CONTRACTS_FILE,
  },
  users,
};
mkdirSync('.dev', { recursive: true });
writeFileSync('.dev/stack.json', `${JSON.stringify(summary, null, 2)}\n`);
process.stdout.write(
  [
    '',
    'Credana dev stack is up.',
    `  hot path        ${base}  (POST /stripe/authorizations, POST /stripe/events, GET /metrics)`,
    `  webhook secret  ${config.STRIPE_WEBHOOK_SECRETS[0]}  (local development only)`,
    `  chain           ${config.CHAIN_RPC_URL}  vault ${contracts.vault}`,
    ...users.map(
      (u) => `  demo user       ${u.userId}  card ${u.cardId}  available ${u.availableCents} cents`,
    ),
    '  summary         .dev/stack.json',
    'Ctrl-C stops everything.',
    '',
  ].join('\n'),
);
