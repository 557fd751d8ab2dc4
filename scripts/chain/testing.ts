/**
 * Helpers for tests against a real chain, Postgres and Redis: an indexer wired to the test services,
 * normalised snapshots of the indexed state (to compare an index with a fresh index of the canonical
 * chain), and the credit a decision would see in Redis.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import type postgres from 'postgres';
import { createIndexer, type Indexer, type IndexerOptions } from '../../indexer/runtime/index.ts';
import { createRpc, type Rpc } from '../../shared/chain/rpc/index.ts';
import { type AssetRisk, type CreditSnapshot, computeCredit, type PriceQuote } from '../../shared/credit.ts';
import { loadAssets } from '../../shared/db/queries/chain.ts';
import { holdingsFromAccount } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { ACCOUNT, pricesKey, userKeys } from '../../shared/redis/keys.ts';
import type { ChainHarness } from './harness.ts';

export const silentLogger = pino({ level: 'silent' });

export interface TestIndexerOptions
  extends Partial<Omit<IndexerOptions, 'sql' | 'redis' | 'prefix' | 'client' | 'contracts'>> {
  rpcUrl?: string;
  rpc?: Rpc;
}

/**
 * An in-process indexer on a test file's services: as `credana_indexer` through the suite's PgBouncer
 * (session-pooled: it holds a session advisory lock) when `services` can open a role's pool
 * (test/support/db.ts `databaseFor`), else on `services.database` as given.
 */
export function createTestIndexer(
  services: {
    database: { sql: postgres.Sql };
    redis: Redis;
    prefix: string;
    databaseFor?: (role: 'credana_indexer', options?: { poolMax?: number }) => { sql: postgres.Sql };
  },
  harness: Pick<ChainHarness, 'url' | 'contracts'>,
  options: TestIndexerOptions = {},
): { indexer: Indexer; rpc: Rpc } {
  const rpc =
    options.rpc ??
    createRpc({
      url: options.rpcUrl ?? harness.url,
      chainId: harness.contracts.chainId,
      retryDelayMsBase: 20,
      retryDelayMsMax: 200,
      requestsPerSMax: 5_000,
      burstMax: 1_000,
    });
  const { rpcUrl: _url, rpc: _rpc, ...rest } = options;
  const sql = services.databaseFor?.('credana_indexer', { poolMax: 5 }).sql ?? services.database.sql;
  const indexer = createIndexer({
    sql,
    redis: services.redis,
    prefix: services.prefix,
    logger: silentLogger,
    client: rpc.client,
    contracts: harness.contracts,
    chainId: harness.contracts.chainId,
    confirmations: 2,
    reorgDepthMax: 16,
    pollIntervalMs: 20,
    ...rest,
  });
  return { indexer, rpc };
}

/** Everything the indexer derives, in a form two databases can be compared by (no timestamps of ours). */
export async function indexedState(sql: postgres.Sql) {
  const [events, positions, accounts, prices, settlements] = await Promise.all([
    sql`select block_number::text, block_hash, log_index, event_name, args, user_id::text, applied_at is not null as applied
        from chain_events order by chain_events.block_number, log_index`,
    sql`select user_id::text, asset_id, collateral_base::text, pending_withdrawal_base::text from positions
        where collateral_base > 0 or pending_withdrawal_base > 0 order by user_id, asset_id`,
    sql`select user_id::text, debt_onchain_usdc::text, unsettled_cents::text from credit_accounts order by user_id`,
    sql`select asset_id, round_id::text, answer::text, extract(epoch from updated_at)::bigint::text as updated_at_s,
        block_number::text from prices where block_number is not null order by asset_id, round_id`,
    sql`select ref, status from settlements order by ref`,
  ]);
  return { events, positions, accounts, prices, settlements };
}

/** The chain-owned fields of users' cached accounts, and the cached prices. */
export async function cachedChainState(redis: Redis, prefix: string, userIds: readonly string[]) {
  const users: Record<string, Record<string, string>> = {};
  for (const userId of userIds) {
    const all = await redis.hgetall(userKeys(prefix, userId).account);
    const own: Record<string, string> = {};
    for (const [field, value] of Object.entries(all)) {
      const chainOwned =
        field.startsWith(ACCOUNT.collateralPrefix) ||
        field.startsWith(ACCOUNT.pendingWithdrawalPrefix) ||
        field === ACCOUNT.debtOnchainUsdc ||
        field === ACCOUNT.debtOnchainCents ||
        field === ACCOUNT.unsettledCents;
      // A zero position and an absent one mean the same to a decision.
      if (chainOwned && !(value === '0' && field.includes(':'))) own[field] = value;
    }
    users[userId] = own;
  }
  const prices = await redis.hgetall(pricesKey(prefix));
  return { users, prices };
}

/** The credit a decision would compute from what Redis holds for the user right now. */
export async function cachedCredit(
  redis: Redis,
  sql: postgres.Sql,
  prefix: string,
  chainId: number,
  userId: string,
  nowS: number,
): Promise<CreditSnapshot> {
  const account = await redis.hgetall(userKeys(prefix, userId).account);
  const holdings = holdingsFromAccount(account);
  const assets = new Map<string, AssetRisk>(
    (await loadAssets(sql, chainId)).map((a) => [
      a.assetId,
      {
        assetId: a.assetId,
        tokenDecimals: a.tokenDecimals,
        priceDecimals: a.priceDecimals,
        ltvBps: a.ltvBps,
        liquidationThresholdBps: a.liquidationThresholdBps,
        priceAgeMaxS: a.priceAgeMaxS,
      },
    ]),
  );
  const prices = new Map<string, PriceQuote>();
  for (const [assetId, json] of Object.entries(await redis.hgetall(pricesKey(prefix)))) {
    const p = JSON.parse(json) as { answer: string; updatedAtS: number };
    prices.set(assetId, { answer: BigInt(p.answer), updatedAtS: p.updatedAtS });
  }
  return computeCredit({
    holdings,
    assets,
    prices,
    nowS,
    debtOnchainUsdc: BigInt(account[ACCOUNT.debtOnchainUsdc] ?? '0'),
    unsettledCents: BigInt(account[ACCOUNT.unsettledCents] ?? '0'),
    holdsCents: BigInt(account[ACCOUNT.holdsCents] ?? '0'),
    creditLimitCents: BigInt(account[ACCOUNT.creditLimitCents] ?? '0'),
  });
}

export interface ChildService {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Runs a service entry point (e.g. indexer/main.ts) as a real process (Node + tsx), configured only
 * through its environment and flags, exactly as in production. The environment is given whole:
 * nothing leaks in from the test's own.
 */
export function spawnService(
  entry: string,
  env: Record<string, string>,
  flags: readonly string[] = [],
): ChildService {
  const root = resolve(import.meta.dirname, '..', '..');
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, entry), ...flags], {
    cwd: root,
    env: { NODE_ENV: 'test', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const collect = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    if (out.length > 400_000) out = out.slice(-200_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  // 'close', not 'exit': it comes after the output pipes are drained, so output() is complete.
  const exited = new Promise<number | string>((done) =>
    child.once('close', (code, signal) => done(code ?? signal ?? 'unknown')),
  );
  return {
    child,
    output: () => out,
    exited,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await exited;
    },
  };
}

export const spawnIndexer = (env: Record<string, string>, flags: readonly string[] = []) =>
  spawnService('indexer/main.ts', env, flags);
export const spawnSettlement = (env: Record<string, string>, flags: readonly string[] = []) =>
  spawnService('settlement/main.ts', env, flags);
export const spawnLiquidator = (env: Record<string, string>, flags: readonly string[] = []) =>
  spawnService('liquidator/main.ts', env, flags);

export interface FlakyProxy {
  url: string;
  /** Requests answered with an injected failure, per method. */
  failures: Map<string, number>;
  requests: Map<string, number>;
  stop(): Promise<void>;
}

/**
 * A JSON-RPC proxy in front of a real node that fails every `n`-th call of the listed methods, in
 * turn: HTTP 503, a reset connection, a JSON-RPC "limit exceeded" error, HTTP 429. The RPC layer
 * must retry all four.
 */
export async function startFlakyProxy(
  target: string,
  failEvery: Record<string, number>,
): Promise<FlakyProxy> {
  const failures = new Map<string, number>();
  const requests = new Map<string, number>();
  let injected = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const call = JSON.parse(body) as { id: number; method: string };
      const seen = (requests.get(call.method) ?? 0) + 1;
      requests.set(call.method, seen);
      const every = failEvery[call.method];
      if (every !== undefined && seen % every === 0) {
        failures.set(call.method, (failures.get(call.method) ?? 0) + 1);
        switch (injected++ % 4) {
          case 0:
            res.writeHead(503).end('unavailable');
            return;
          case 1:
            req.socket.destroy();
            return;
          case 2:
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(
              JSON.stringify({
                jsonrpc: '2.0',
                id: call.id,
                error: { code: -32005, message: 'limit exceeded' },
              }),
            );
            return;
          default:
            res.writeHead(429).end('slow down');
            return;
        }
      }
      fetch(target, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
        .then(async (upstream) => {
          res.writeHead(upstream.status, { 'content-type': 'application/json' });
          res.end(await upstream.text());
        })
        .catch(() => res.writeHead(502).end());
    });
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    failures,
    requests,
    stop: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
