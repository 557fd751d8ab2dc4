/**
 * The system under test, started for real on private ports: a private redis-server (AOF, fsync always)
 * or a private Redis Cluster (redis-cluster.ts) or a Redis the caller names, a private PostgreSQL cluster
 * with PgBouncer (transaction pooling) in front, N hot-path processes and M ledger-writer processes.
 * Each process reaches Redis (not a cluster: its nodes directly) and PgBouncer through TCP proxies of its own, so a fault can stall, slow,
 * cut or one-way-partition one process or all of them. The harness itself talks to Redis and Postgres
 * directly (it plays Stripe and the indexer, and gathers the facts at the end).
 */
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createDatabase, type Database } from '../../shared/db/client.ts';
import { ensureDatabase, migrateDatabase } from '../../shared/db/migrate.ts';
import { createRedis, type Redis } from '../../shared/redis/client.ts';
import {
  freePort,
  type PostgresCluster,
  type RedisServer,
  type ServiceProcess,
  spawnService,
  startPostgresCluster,
  startRedisServer,
} from '../../test/support/processes.ts';
import { TEST_WEBHOOK_SECRET } from '../../test/support/stripe.ts';
import { startTcpProxy, type TcpProxy } from '../../test/support/tcp-proxy.ts';
import { LOCAL_WITHDRAWAL_SIGNER, localAccount, ROLES } from '../chain/harness.ts';
import { type PgBouncer, startPgBouncer } from '../dev/pgbouncer.ts';
import { CHAIN_CONFIRMATIONS, type ChainSide, REORG_DEPTH_MAX } from './chain.ts';

/**
 * What is running, so an interrupted run (Ctrl-C) stops its servers and processes instead of leaving
 * them to the machine: each start registers its stop, each stop unregisters it.
 */
const running = new Set<() => Promise<void>>();

export function track(stop: () => Promise<void>): () => Promise<void> {
  const once = async () => {
    running.delete(once);
    await stop();
  };
  running.add(once);
  return once;
}

/** Stops everything still running (newest first). */
export async function stopEverything(): Promise<void> {
  for (const stop of [...running].reverse()) await stop().catch(() => undefined);
}

/** Where Redis is and what the harness may do to it. A private server supports every fault. */
export interface RedisTarget {
  host: string;
  port: number;
  /** SIGKILL and start again (AOF keeps the data); absent when the harness does not own the server. */
  killAndRestart?(downMs: number): Promise<void>;
  /** SIGKILL, delete its AOF and RDB, start again on the same port with nothing (a node replaced). */
  emptyRestart?(downMs: number): Promise<void>;
  /**
   * A Redis Cluster (redis-cluster.ts): its nodes' `host:port`. The services and the harness connect to
   * the nodes directly (REDIS_CLUSTER_NODES), not through the proxies, which then carry nothing.
   */
  clusterNodes?: readonly string[];
  /** Cluster only: fails shard `shard`'s primary over (killed or CLUSTER FAILOVER); what happened. */
  failover?(shard: number, how: 'kill' | 'manual', downMs: number): Promise<string>;
  destroy(): Promise<void>;
}

export async function privateRedis(): Promise<RedisTarget> {
  const server: RedisServer = await startRedisServer([
    '--appendonly',
    'yes',
    '--appendfsync',
    'always',
    '--maxmemory-policy',
    'noeviction',
  ]);
  return {
    host: '127.0.0.1',
    port: server.port,
    async killAndRestart(downMs: number) {
      await server.kill('SIGKILL');
      await new Promise((resolve) => setTimeout(resolve, downMs));
      await server.start();
    },
    async emptyRestart(downMs: number) {
      await server.kill('SIGKILL');
      for (const entry of readdirSync(server.dir))
        rmSync(path.join(server.dir, entry), { recursive: true, force: true });
      await new Promise((resolve) => setTimeout(resolve, downMs));
      await server.start();
    },
    destroy: track(() => server.destroy()),
  };
}

/** A Redis someone else runs (no server faults; proxy faults still apply). */
export function externalRedis(url: string): RedisTarget {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 6379), destroy: async () => {} };
}

/** The PostgreSQL side, shared by the seeds of one run: a private cluster, a migrated template, PgBouncer. */
export interface PostgresSide {
  cluster: PostgresCluster;
  pgBouncer: PgBouncer;
  /** A fresh database for one seed (a clone of the migrated template), its direct URL. */
  newDatabase(name: string): Promise<string>;
  dropDatabase(name: string): Promise<void>;
  destroy(): Promise<void>;
}

const TEMPLATE = 'chaos_template';

export async function startPostgresSide(): Promise<PostgresSide> {
  const cluster = await startPostgresCluster({ settings: { max_connections: '200' } });
  const templateUrl = new URL(cluster.url);
  templateUrl.pathname = `/${TEMPLATE}`;
  await ensureDatabase(templateUrl.toString());
  await migrateDatabase(templateUrl.toString());
  const pgBouncer = await startPgBouncer({
    upstreamHost: '127.0.0.1',
    upstreamPort: cluster.port,
    port: await freePort(),
    users: ['postgres'],
    poolSize: 20,
  });
  const admin = createDatabase({ url: cluster.url, poolMax: 1, applicationName: 'chaos-admin' });
  const urlOf = (name: string) => {
    const u = new URL(cluster.url);
    u.pathname = `/${name}`;
    return u.toString();
  };
  return {
    cluster,
    pgBouncer,
    async newDatabase(name) {
      await admin.sql.unsafe(`drop database if exists "${name}" with (force)`);
      await admin.sql.unsafe(`create database "${name}" template "${TEMPLATE}"`);
      return urlOf(name);
    },
    async dropDatabase(name) {
      await admin.sql.unsafe(`drop database if exists "${name}" with (force)`);
    },
    destroy: track(async () => {
      await admin.close().catch(() => undefined);
      await pgBouncer.stop().catch(() => undefined);
      cluster.destroy();
    }),
  };
}

export type ProcessKind = 'hot-path' | 'writer' | 'indexer' | 'settlement' | 'liquidator' | 'withdrawals';

/**
 * The processes that run against the chain (its RPC through a proxy of their own, Postgres directly).
 * The withdrawal approver among them: production routes its role through PgBouncer in session mode
 * (scripts/dev/pgbouncer.ts), which a direct connection through its proxy stands for.
 */
const CHAIN_WORKERS: readonly ProcessKind[] = ['indexer', 'settlement', 'liquidator', 'withdrawals'];

/** The internal token the harness (as the API process would) presents to the withdrawal approver. */
export const CHAOS_INTERNAL_API_TOKEN = 'chaos-internal-api-token-0123456789';

export interface ManagedProcess {
  name: string;
  kind: ProcessKind;
  redisProxy: TcpProxy;
  pgProxy: TcpProxy;
  /** The chain workers' proxy to the chain's RPC (null for the hot paths and the writers). */
  rpcProxy: TcpProxy | null;
  /** The running process, or null while it is dead (between a SIGKILL and its restart). */
  current: ServiceProcess | null;
  /** The hot path's (or the withdrawal approver's) base URL while it runs. */
  url: string | null;
  stopped: boolean;
  restarts: number;
  /** Output of the processes that died (the last bit of each), for a failure report. */
  deadOutput: string[];
  /** Exits nobody asked for (a crash): the supervisor restarts the process; each is reported. */
  crashes: { atMs: number; exit: string; output: string }[];
  /** A start in progress (the supervisor's after a crash, or the harness's). */
  starting: Promise<void> | null;
}

export interface ChaosSystemOptions {
  prefix: string;
  databaseName: string;
  hotPaths: number;
  writers: number;
  fallbackGrantCentsMax: number;
  /** How the services reach Postgres: through PgBouncer (transaction pooling, production's way) or directly. */
  postgresRoute: 'pgbouncer' | 'direct';
  /** The chain, when the run has one: the indexer, the settlement worker and the liquidator run against it. */
  chain: ChainSide | null;
  /** The hot paths and writers run with the clock-offset preload (the run plays `clock_offset`). */
  clockOffsets?: boolean;
}

export interface ChaosSystem {
  redis: Redis;
  database: Database;
  databaseUrl: string;
  processes: ManagedProcess[];
  redisTarget: RedisTarget;
  postgres: PostgresSide;
  chain: ChainSide | null;
  /** Hot paths that are running and not SIGSTOPped, as a load balancer would see them. */
  liveHotPaths(): ManagedProcess[];
  kill(p: ManagedProcess): Promise<void>;
  restart(p: ManagedProcess): Promise<void>;
  sigstop(p: ManagedProcess): void;
  sigcont(p: ManagedProcess): void;
  /** Sets a hot path's or writer's wall-clock offset (clock-offset.mjs), now and for its restarts. */
  setClockOffset(p: ManagedProcess, offsetMs: number): void;
  /** Starts the indexer, the settlement worker, the liquidator and the withdrawal approver (once the assets and the users' wallets are in). */
  startChainWorkers(): Promise<void>;
  /** Every proxy resumed, no latency, every process continued and running. */
  heal(): Promise<void>;
  close(): Promise<void>;
}

/** Each process kind's entry point, the line it prints once it serves, and its flags. */
const SERVICES: Record<ProcessKind, { entry: string; ready: string; args: string[] }> = {
  'hot-path': { entry: 'hot-path/main.ts', ready: 'hot-path ready', args: [] },
  writer: { entry: 'ledger-writer/main.ts', ready: 'ledger-writer ready', args: [] },
  indexer: { entry: 'indexer/main.ts', ready: 'indexer ready', args: ['--poll-interval-ms', '100'] },
  settlement: {
    entry: 'settlement/main.ts',
    ready: 'settlement worker started',
    args: ['--poll-interval-ms', '200', '--resend-after-ms', '3000'],
  },
  liquidator: {
    entry: 'liquidator/main.ts',
    ready: 'liquidator started',
    args: ['--poll-interval-ms', '200', '--resend-after-ms', '3000'],
  },
  withdrawals: { entry: 'withdrawals/main.ts', ready: 'withdrawals ready on', args: [] },
};

const CLOCK_PRELOAD = path.join(import.meta.dirname, 'clock-offset.mjs');

/** The file clock-offset.mjs reads one process's offset from (milliseconds). */
function clockFile(prefix: string, name: string): string {
  return path.join(tmpdir(), `credana-chaos-clock-${prefix.replaceAll(':', '')}-${name}`);
}

/** Each process's environment: its own proxies to Redis and Postgres (or PgBouncer), and the chain for the chain workers. */
function processEnv(
  redisTarget: RedisTarget,
  postgres: PostgresSide,
  options: ChaosSystemOptions,
  databaseUrl: string,
): (p: ManagedProcess) => Record<string, string> {
  return (p: ManagedProcess): Record<string, string> => {
    const pooled = new URL(
      options.postgresRoute === 'pgbouncer'
        ? postgres.pgBouncer.url('postgres', options.databaseName)
        : databaseUrl,
    );
    pooled.port = String(p.pgProxy.port);
    const common: Record<string, string> = {
      NODE_ENV: 'test',
      LOG_LEVEL: 'error',
      DATABASE_URL: pooled.toString(),
      REDIS_URL: p.redisProxy.url('redis'),
      REDIS_KEY_PREFIX: options.prefix,
      STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
    };
    // On a cluster: straight to the nodes, and an approval answered only once its shard's replica has
    // it (REDIS_WAIT_REPLICAS=1, what a deployment with replicas runs: docs/hot-path.md "Replication
    // and failover"); Redis decides for the hot path only, so the others need no WAIT.
    if (redisTarget.clusterNodes !== undefined) {
      Object.assign(common, {
        REDIS_CLUSTER_NODES: redisTarget.clusterNodes.join(','),
        ...(p.kind === 'hot-path' ? { REDIS_WAIT_REPLICAS: '1' } : {}),
      });
    }

    const clock: Record<string, string> =
      options.clockOffsets === true && (p.kind === 'hot-path' || p.kind === 'writer')
        ? { NODE_OPTIONS: `--import=${CLOCK_PRELOAD}`, CHAOS_CLOCK_FILE: clockFile(options.prefix, p.name) }
        : {};
    if (p.kind === 'writer') return { ...common, ...clock, LEDGER_WRITER_PORT: '0' };
    if (CHAIN_WORKERS.includes(p.kind)) {
      const chain = options.chain;
      if (chain === null || p.rpcProxy === null) throw new Error(`${p.name} needs the chain`);
      // Session advisory locks: straight to Postgres (through the process's own proxy), not PgBouncer.
      const direct = new URL(databaseUrl);
      direct.port = String(p.pgProxy.port);
      return {
        ...common,
        // The ready lines are info-level logs.
        LOG_LEVEL: 'info',
        DATABASE_URL: direct.toString(),
        CHAIN_RPC_URL: `http://127.0.0.1:${p.rpcProxy.port}`,
        CHAIN_ID: String(chain.contracts.chainId),
        CONTRACTS_FILE: chain.contractsFile,
        CHAIN_CONFIRMATIONS: String(CHAIN_CONFIRMATIONS),
        REORG_DEPTH_MAX: String(REORG_DEPTH_MAX),
        ...(p.kind === 'settlement'
          ? { SETTLER_PRIVATE_KEY: localAccount(ROLES.settler).privateKey, SETTLEMENT_METRICS_PORT: '0' }
          : {}),
        ...(p.kind === 'liquidator'
          ? {
              LIQUIDATOR_PRIVATE_KEY: localAccount(ROLES.liquidator).privateKey,
              LIQUIDATOR_METRICS_PORT: '0',
            }
          : {}),
        ...(p.kind === 'withdrawals' ? withdrawalsEnv(databaseUrl, p) : {}),
      };
    }
    return {
      ...common,
      ...clock,
      HOT_PATH_PORT: '0',
      VELOCITY_LIMIT_PER_MIN: '10000',
      DAILY_LIMIT_CEILING_CENTS_DEFAULT: '1000000000',
      DAILY_LIMIT_CENTS_DEFAULT: '1000000000',
      FALLBACK_GRANT_CENTS_MAX: String(options.fallbackGrantCentsMax),
    };
  };
}

/**
 * The withdrawal approver's own: its Postgres role as in production (credana_withdrawals, drizzle/0007,
 * 0020: it reads what it judges and inserts `withdrawal_approvals`, nothing more; trust authentication
 * on the private cluster), the local withdrawal signer's key (the vault's WITHDRAWAL_SIGNER_ROLE at
 * deploy), the internal token, free ports.
 */
function withdrawalsEnv(databaseUrl: string, p: ManagedProcess): Record<string, string> {
  const asRole = new URL(databaseUrl);
  asRole.port = String(p.pgProxy.port);
  asRole.username = 'credana_withdrawals';
  asRole.password = '';
  return {
    DATABASE_URL: asRole.toString(),
    WITHDRAWAL_SIGNER_PRIVATE_KEY: localAccount(LOCAL_WITHDRAWAL_SIGNER).privateKey,
    INTERNAL_API_TOKEN: CHAOS_INTERNAL_API_TOKEN,
    WITHDRAWALS_HOST: '127.0.0.1',
    WITHDRAWALS_PORT: '0',
    WITHDRAWALS_METRICS_PORT: '0',
  };
}

/** Every process of the system, each with its proxies started, none spawned yet. */
async function makeProcesses(
  redisTarget: RedisTarget,
  postgres: PostgresSide,
  options: ChaosSystemOptions,
): Promise<ManagedProcess[]> {
  const processes: ManagedProcess[] = [];
  const make = async (kind: ProcessKind, i: number) => {
    const chainWorker = CHAIN_WORKERS.includes(kind);
    const p: ManagedProcess = {
      name: `${kind}-${i}`,
      kind,
      redisProxy: await startTcpProxy(redisTarget.port, redisTarget.host),
      pgProxy: await startTcpProxy(
        options.postgresRoute === 'pgbouncer' && !chainWorker
          ? postgres.pgBouncer.port
          : postgres.cluster.port,
      ),
      rpcProxy: chainWorker && options.chain !== null ? await startTcpProxy(options.chain.node.port) : null,
      current: null,
      url: null,
      stopped: false,
      restarts: 0,
      deadOutput: [],
      crashes: [],
      starting: null,
    };
    processes.push(p);
    return p;
  };
  for (let i = 0; i < options.hotPaths; i++) await make('hot-path', i);
  for (let i = 0; i < options.writers; i++) await make('writer', i);
  if (options.chain !== null) {
    await make('indexer', 0);
    await make('settlement', 0);
    await make('liquidator', 0);
    await make('withdrawals', 0);
  }

  return processes;
}

/** SIGKILLs a process (continued first if stopped) and keeps the end of its output. */
async function killProcess(p: ManagedProcess): Promise<void> {
  await p.starting;
  const proc = p.current;
  p.current = null;
  p.url = null;
  if (proc === null) return;
  if (p.stopped) proc.child.kill('SIGCONT');
  p.stopped = false;
  await proc.kill('SIGKILL');
  p.deadOutput.push(proc.output().slice(-2_000));
}

/**
 * Starts a process of the system and, as a process supervisor would, starts it again 500 ms after it
 * dies on its own (not when the harness killed it, nor while the system closes).
 */
function supervisor(
  envOf: (p: ManagedProcess) => Record<string, string>,
  closing: () => boolean,
): (p: ManagedProcess) => Promise<void> {
  const spawn = async (p: ManagedProcess): Promise<void> => {
    const { entry, ready, args } = SERVICES[p.kind];
    const proc = await spawnService(entry, envOf(p), ready, { args });
    p.current = proc;
    p.stopped = false;
    proc.child.once('exit', (code, signal) => {
      if (p.current !== proc || closing()) return; // killed by the harness
      p.crashes.push({
        atMs: performance.now(),
        exit: String(code ?? signal),
        output: proc.output().slice(-3_000),
      });
      p.current = null;
      p.url = null;
      p.starting = (async () => {
        await new Promise((resolve) => setTimeout(resolve, 500));
        if (!closing() && p.current === null) await spawn(p).catch(() => undefined);
      })().finally(() => {
        p.starting = null;
      });
    });
    if (p.kind === 'hot-path') {
      p.url = /hot-path ready on (http:\/\/[\d.]+:\d+)/.exec(proc.output())?.[1] ?? null;
    }
    if (p.kind === 'withdrawals') {
      p.url = /withdrawals ready on (http:\/\/[\d.]+:\d+)/.exec(proc.output())?.[1] ?? null;
    }
  };
  return spawn;
}

export async function startSystem(
  redisTarget: RedisTarget,
  postgres: PostgresSide,
  options: ChaosSystemOptions,
): Promise<ChaosSystem> {
  const databaseUrl = await postgres.newDatabase(options.databaseName);
  const database = createDatabase({
    url: databaseUrl,
    poolMax: 4,
    connectTimeoutS: 2,
    applicationName: 'chaos',
  });
  const redis = createRedis({
    url: `redis://${redisTarget.host}:${redisTarget.port}`,
    ...(redisTarget.clusterNodes === undefined ? {} : { clusterNodes: redisTarget.clusterNodes }),
  });

  const envOf = processEnv(redisTarget, postgres, options, databaseUrl);

  let closing = false;
  const spawn = supervisor(envOf, () => closing);

  const processes = await makeProcesses(redisTarget, postgres, options);
  if (options.clockOffsets === true)
    for (const p of processes)
      if (p.kind === 'hot-path' || p.kind === 'writer') writeFileSync(clockFile(options.prefix, p.name), '0');

  const kill = killProcess;

  const system: ChaosSystem = {
    redis,
    database,
    databaseUrl,
    processes,
    redisTarget,
    postgres,
    chain: options.chain,
    liveHotPaths: () =>
      processes.filter((p) => p.kind === 'hot-path' && p.current !== null && p.url !== null && !p.stopped),
    kill,
    async restart(p) {
      await p.starting;
      await kill(p);
      p.restarts++;
      await spawn(p);
    },
    async startChainWorkers() {
      await Promise.all(processes.filter((p) => CHAIN_WORKERS.includes(p.kind)).map((p) => spawn(p)));
    },
    sigstop(p) {
      if (p.current === null || p.stopped) return;
      p.current.child.kill('SIGSTOP');
      p.stopped = true;
    },
    sigcont(p) {
      if (p.current === null || !p.stopped) return;
      p.current.child.kill('SIGCONT');
      p.stopped = false;
    },
    setClockOffset(p, offsetMs) {
      // Only the processes that run the preload (a SIGUSR2 would end any other).
      if (options.clockOffsets !== true || (p.kind !== 'hot-path' && p.kind !== 'writer')) return;
      writeFileSync(clockFile(options.prefix, p.name), String(offsetMs));
      // A stopped process reads it when continued; a dead one when restarted.
      p.current?.child.kill('SIGUSR2');
    },
    async heal() {
      for (const p of processes) {
        p.redisProxy.setLatencyMs(0);
        p.pgProxy.setLatencyMs(0);
        p.redisProxy.resume();
        p.pgProxy.resume();
        p.rpcProxy?.setLatencyMs(0);
        p.rpcProxy?.resume();
        system.sigcont(p);
        system.setClockOffset(p, 0);
      }
      for (const p of processes) {
        const dead =
          p.current === null || p.current.child.exitCode !== null || p.current.child.signalCode !== null;
        if (dead) await system.restart(p);
      }
    },
    close: track(async () => {
      closing = true;
      for (const p of processes) {
        p.redisProxy.resume();
        p.pgProxy.resume();
        p.rpcProxy?.resume();
        system.sigcont(p);
      }
      await Promise.allSettled(processes.map((p) => p.current?.kill('SIGKILL')));
      await Promise.allSettled(
        processes.flatMap((p) => [p.redisProxy.close(), p.pgProxy.close(), p.rpcProxy?.close()]),
      );
      redis.disconnect();
      await database.close().catch(() => undefined);
      await postgres.dropDatabase(options.databaseName).catch(() => undefined);
    }),
  };
  await Promise.all(processes.filter((p) => p.rpcProxy === null).map((p) => spawn(p)));
  return system;
}
