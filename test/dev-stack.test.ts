// Proves `npm run dev` and `npm run demo` end to end on private resources only: dev runs as a real process with DATABASE_URL on a port where nothing listens (so it starts its own embedded PostgreSQL, data in a temp DEV_STATE_DIR), a Redis port where nothing listens (its own redis-server), and private chain, PgBouncer and service ports; every service connects through dev's PgBouncer as its own role (its admin console's SHOW POOLS and SHOW CLIENTS: one pool per service role, session pooling for the lock-holding workers, no service as the superuser); every service's output streams to dev's terminal prefixed with its name and lands in DEV_STATE_DIR/logs/<service>.log; the demo's story runs against it (approved, declined insufficient_credit / blocked_mcc / card_frozen, a settlement transaction checked on the chain, a withdrawal the approval service refuses, a liquidation by the liquidator dev started, checked on the chain); then SIGINT (Ctrl-C) stops everything and every port is free again; a second run reuses the cluster's data (and, its chain being new, recreates the databases); when dev is killed its services die with it, and the next run (with --observe) adopts the PostgreSQL and redis-server it left, replaces the PgBouncer it left, starts Prometheus with every service of the stack as an up target and the repository's rules loaded, and stops them all on SIGINT. The shared PostgreSQL (5432) and Redis (6379) are never used.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import type { Hex } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localClients } from '../scripts/chain/deploy.ts';
import { localAccount, ROLES } from '../scripts/chain/harness.ts';
import { pgBouncerPidFile, SERVICE_ROLE_POOL_MODES } from '../scripts/dev/pgbouncer.ts';
import type { StackSummary } from '../scripts/dev/stack.ts';
import { credanaVaultAbi } from '../shared/chain/contracts/index.ts';
import { USDC_PER_CENT } from '../shared/money.ts';
import { freePort, runScript } from './support/processes.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
// Generous: on a shared 2-core machine under load a cold start has taken over 110 s (one run, load average 15).
const DEV_START_MS = 240_000;

let dir: string;
let stateDir: string;
let env: Record<string, string>;
let ports: Record<
  'postgres' | 'redis' | 'hotPath' | 'ledgerWriter' | 'supabaseSync' | 'chain' | 'prometheus' | 'pgBouncer',
  number
>;
let dev: DevProcess;
let stack: StackSummary;

interface DevProcess {
  child: ChildProcess;
  output(): string;
  exit: Promise<number | string>;
}

/** `node --import tsx scripts/dev.ts`, as `npm run dev` runs it: ONE process, so SIGINT reaches dev itself. */
function startDev(args: string[] = []): DevProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/dev.ts', ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const collect = (chunk: Buffer) => {
    // dev streams every service's output: keep enough to see its own lines from the start.
    out = (out + chunk.toString()).slice(-4_000_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exit = new Promise<number | string>((resolve) =>
    child.once('close', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  return { child, output: () => out, exit };
}

const tail = () => dev.output().slice(-4_000);

/** Waits for dev's "stack is up" line and its stack.json. */
async function stackOf(run: DevProcess): Promise<StackSummary> {
  const file = path.join(stateDir, 'stack.json');
  const deadline = Date.now() + DEV_START_MS;
  while (!(existsSync(file) && run.output().includes('Credana dev stack is up'))) {
    if (run.child.exitCode !== null) throw new Error(`dev exited with ${run.child.exitCode}:\n${tail()}`);
    if (Date.now() > deadline)
      throw new Error(`dev did not write stack.json in ${DEV_START_MS / 1000} s:\n${tail()}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return JSON.parse(readFileSync(file, 'utf8')) as StackSummary;
}

/** SIGINT, as Ctrl-C; resolves with dev's exit code (or a note that it is still running). */
async function interrupt(run: DevProcess): Promise<number | string> {
  run.child.kill('SIGINT');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve('still running after 30 s'), 30_000);
  });
  const result = await Promise.race([run.exit, late]);
  clearTimeout(timer);
  return result;
}

/** True when nothing accepts connections on 127.0.0.1:port. */
function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

async function distinctFreePorts(count: number): Promise<number[]> {
  const found = new Set<number>();
  while (found.size < count) found.add(await freePort());
  return [...found];
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'credana-dev-stack-'));
  // As root, the embedded PostgreSQL runs as the postgres OS user, which must reach the data directory.
  chmodSync(dir, 0o755);
  stateDir = path.join(dir, 'state');
  const [postgresPort, redis, hotPath, ledgerWriter, supabaseSync, chain, prometheus, pgBouncer] =
    await distinctFreePorts(8);
  ports = {
    postgres: postgresPort!,
    redis: redis!,
    hotPath: hotPath!,
    ledgerWriter: ledgerWriter!,
    supabaseSync: supabaseSync!,
    chain: chain!,
    prometheus: prometheus!,
    pgBouncer: pgBouncer!,
  };
  env = {
    PATH: process.env['PATH'] ?? '',
    ...(process.env['HOME'] === undefined ? {} : { HOME: process.env['HOME'] }),
    // No NODE_ENV, as a developer types `npm run dev`: dev and demo are local tools and default to
    // development (unset means production for everything deployed), and dev hands its NODE_ENV to
    // every service it starts.
    LOG_LEVEL: 'info',
    DEV_STATE_DIR: stateDir,
    DATABASE_URL: `postgres://postgres@127.0.0.1:${ports.postgres}/credana`,
    SUPABASE_DB_URL: `postgres://postgres@127.0.0.1:${ports.postgres}/credana_supabase`,
    REDIS_URL: `redis://127.0.0.1:${ports.redis}`,
    HOT_PATH_PORT: String(ports.hotPath),
    LEDGER_WRITER_PORT: String(ports.ledgerWriter),
    SUPABASE_SYNC_METRICS_PORT: String(ports.supabaseSync),
    CHAIN_RPC_URL: `http://127.0.0.1:${ports.chain}`,
    CONTRACTS_FILE: path.join(stateDir, 'contracts.json'),
    DEV_PROMETHEUS_PORT: String(ports.prometheus),
    DEV_PGBOUNCER_PORT: String(ports.pgBouncer),
  };
  for (const port of Object.values(ports)) expect(await portClosed(port)).toBe(true);

  dev = startDev();
  stack = await stackOf(dev);
}, DEV_START_MS + 10_000);

afterAll(async () => {
  // Only if a step above failed: stop dev the way a user would, then make sure nothing of ours is left.
  if (dev !== undefined && dev.child.exitCode === null && dev.child.signalCode === null) {
    if ((await interrupt(dev)) === 'still running after 30 s') dev.child.kill('SIGKILL');
  }
  const pidFile = path.join(stateDir ?? '', 'postgres', 'postmaster.pid');
  if (stateDir !== undefined && existsSync(pidFile)) {
    const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      // already gone
    }
  }
  const pgBouncerPid = path.join(stateDir ?? '', 'pgbouncer', 'pgbouncer.pid');
  if (stateDir !== undefined && existsSync(pgBouncerPid)) {
    try {
      process.kill(Number(readFileSync(pgBouncerPid, 'utf8').trim()), 'SIGTERM');
    } catch {
      // already gone
    }
  }
  if (ports !== undefined && !(await portClosed(ports.redis))) {
    execFileSync('redis-cli', ['-p', String(ports.redis), 'shutdown', 'nosave'], { stdio: 'ignore' });
  }
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('npm run dev + npm run demo', () => {
  it('starts an embedded PostgreSQL of its own when DATABASE_URL does not answer', () => {
    expect(dev.output()).toContain(
      `created and started an embedded PostgreSQL 15 on 127.0.0.1:${ports.postgres}`,
    );
    expect(dev.output()).toContain(`starting redis-server on ${ports.redis}`);
    expect(existsSync(path.join(stateDir, 'postgres', 'PG_VERSION'))).toBe(true);
    expect(stack.postgres).toEqual({ embedded: true, dataDir: path.join(stateDir, 'postgres') });
    expect(stack.hotPath.baseUrl).toBe(`http://127.0.0.1:${ports.hotPath}`);
    expect(stack.users.map((u) => u.availableCents > 0)).toEqual([true, true]);
  });

  it('streams each service output live with a prefix, and keeps it in DEV_STATE_DIR/logs/<service>.log', () => {
    const services = [
      'hot-path',
      'ledger-writer',
      'indexer',
      'settlement',
      'liquidator',
      'supabase-sync',
      'scheduler',
    ];
    for (const service of services) {
      const log = readFileSync(path.join(stateDir, 'logs', `${service}.log`), 'utf8');
      // Each service's log holds its own JSON lines (pino, with its service name) …
      const line = log.split('\n').find((l) => l.includes(`"service":"${service}"`));
      expect(line, `${service}.log`).toBeDefined();
      // … and dev's terminal showed the same line, prefixed.
      expect(dev.output()).toContain(`[${service}] ${line}`);
    }
    expect(readFileSync(path.join(stateDir, 'logs', 'hot-path.log'), 'utf8')).toContain('hot-path ready on');
    expect(dev.output()).toContain(`[hot-path] hot-path ready on http://127.0.0.1:${ports.hotPath}`);
    expect(stack.prometheus).toBeUndefined();
  });

  it('plays the demo story: approvals, declines with reasons, a freeze, a capture settled on-chain, a refused withdrawal, a liquidation', async () => {
    const startedAt = Date.now();
    const demo = await runScript('scripts/demo.ts', [], env);
    const report = `${demo.stdout}\n${demo.stderr}\n--- dev ---\n${tail()}`;
    expect(demo.code, report).toBe(0);
    expect(demo.stderr, report).toBe('');
    expect(demo.stdout).toMatch(/the indexer credited it .* later: available credit \$/);
    expect(demo.stdout).toMatch(/2a\. \$12\.50 at a grocery .*: approved \(reason approved\)/);
    expect(demo.stdout).toMatch(/2b\. .*: declined \(reason insufficient_credit\)/);
    expect(demo.stdout).toMatch(/2c\. .*: declined \(reason blocked_mcc\)/);
    expect(demo.stdout).toMatch(/3b\. available credit \$[\d,.]+ -> \$[\d,.]+/);
    expect(demo.stdout).toMatch(/3c\. .*: declined \(reason insufficient_credit\)/);
    expect(demo.stdout).toMatch(/4b\. .*: declined \(reason card_frozen\)/);
    expect(demo.stdout).toMatch(/4d\. .*: approved \(reason approved\)/);
    expect(demo.stdout).toMatch(
      /6b\. the withdrawal approval service refuses to sign \(reason uncovered\): exposure \$/,
    );
    expect(demo.stdout).toMatch(/6d\. cancelled in block \d+/);
    expect(demo.stdout).toMatch(/7c\. Carol's dashboard .*health_notice = warning/);
    expect(demo.stdout).toMatch(/7d\. .*health factor 0\.\d{4}, available credit -?\$[\d,.]+/);
    expect(demo.stdout).toMatch(/7e\. .*: declined \(reason insufficient_credit\)/);
    expect(demo.stdout).toMatch(
      /7g\. the indexer booked it at first sight: .*available credit \$[\d,.]+ again/,
    );
    expect(demo.stdout).toMatch(/7h\. Carol's dashboard activity: a liquidation of [\d.]+ WETH/);
    expect(demo.stdout).toContain('The story is complete.');

    // The settlement it printed is a real, successful vault transaction, and the vault owes what was captured.
    const hash = /5c\. settled in transaction (0x[0-9a-f]{64})/.exec(demo.stdout)?.[1];
    expect(hash, report).toBeDefined();
    const { publicClient } = localClients(stack.chain.rpcUrl);
    const receipt = await publicClient.getTransactionReceipt({ hash: hash as Hex });
    expect(receipt.status).toBe('success');
    expect(receipt.to?.toLowerCase()).toBe(stack.chain.vault.toLowerCase());
    const bob = stack.users[1]!;
    const debt = await publicClient.readContract({
      address: stack.chain.vault as Hex,
      abi: credanaVaultAbi,
      functionName: 'debtOf',
      args: [bob.wallet as Hex],
    });
    expect(debt).toBe(1_250n * USDC_PER_CENT);

    // The liquidation it printed is a real vault transaction, the only liquidation of Carol's position.
    const liquidation = /7f\. the liquidator .* in transaction (0x[0-9a-f]{64})/.exec(demo.stdout)?.[1];
    expect(liquidation, report).toBeDefined();
    const liquidated = await publicClient.getTransactionReceipt({ hash: liquidation as Hex });
    expect(liquidated.status).toBe('success');
    expect(liquidated.to?.toLowerCase()).toBe(stack.chain.vault.toLowerCase());
    const carol = localAccount(ROLES.firstUser + 2).address.toLowerCase();
    const events = await publicClient.getContractEvents({
      address: stack.chain.vault as Hex,
      abi: credanaVaultAbi,
      eventName: 'Liquidated',
      fromBlock: 0n,
    });
    expect(events.map((e) => (e.args.user as string).toLowerCase())).toEqual([carol]);
    expect(Date.now() - startedAt).toBeLessThan(45_000);
  }, 60_000);

  it('connects every service through its PgBouncer as its own role, session-pooled where it holds a session lock', async () => {
    // PgBouncer's admin console (dev's DATABASE_URL user is its admin): who is connected, to which pool.
    const admin = postgres(`postgres://postgres@127.0.0.1:${ports.pgBouncer}/pgbouncer`, {
      max: 1,
      fetch_types: false,
      onnotice: () => {},
    });
    try {
      // A pool exists for each (database, user) that ever connected (clients come and go: the ledger
      // writer connects once it has a batch, which the demo above gave it). Every long-running service dev started has one under its own role
      // (the anchorer and the scheduler share credana_reconciliation); none connected as the superuser.
      const pools = (await admin.unsafe('show pools').simple()).filter(
        (pool) => pool['database'] !== 'pgbouncer',
      );
      expect(new Set(pools.map((pool) => pool['user']))).toEqual(
        new Set([
          'credana_hot_path',
          'credana_ledger_writer',
          'credana_indexer',
          'credana_settlement',
          'credana_liquidator',
          'credana_reconciliation',
          'credana_supabase_sync',
        ]),
      );
      expect(new Set(pools.map((pool) => pool['database']))).toEqual(new Set(['credana']));
      // Connected right now, through it: at least the hot path (its lease renewals) and the workers that
      // hold a session lock for as long as they run.
      const clients = new Set(
        (await admin.unsafe('show clients').simple())
          .filter((client) => client['database'] === 'credana')
          .map((client) => client['user']),
      );
      for (const role of ['credana_hot_path', 'credana_indexer', 'credana_settlement', 'credana_liquidator'])
        expect(clients.has(role), `${role} connected`).toBe(true);
      // The pool mode each role got is the one production gives it (SERVICE_ROLE_POOL_MODES).
      for (const pool of pools) {
        const role = pool['user'] as keyof typeof SERVICE_ROLE_POOL_MODES;
        expect(pool['pool_mode'], role).toBe(SERVICE_ROLE_POOL_MODES[role]);
      }
      expect(pools.find((pool) => pool['user'] === 'credana_indexer')?.['pool_mode']).toBe('session');
      expect(pools.find((pool) => pool['user'] === 'credana_hot_path')?.['pool_mode']).toBe('transaction');
    } finally {
      await admin.end();
    }
    // Upstream, the service roles' sessions come from PgBouncer: the indexer's session lock is held by a
    // backend logged in as credana_indexer.
    const upstream = postgres(`postgres://postgres@127.0.0.1:${ports.postgres}/credana`, {
      max: 1,
      onnotice: () => {},
    });
    try {
      const holders = await upstream<{ usename: string }[]>`
        select distinct a.usename from pg_locks l join pg_stat_activity a using (pid)
        where l.locktype = 'advisory' and l.granted and l.objsubid = 2 and a.datname = 'credana'`;
      expect(holders.map((h) => h.usename).sort()).toEqual(
        ['credana_indexer', 'credana_liquidator', 'credana_reconciliation', 'credana_settlement'].sort(),
      );
    } finally {
      await upstream.end();
    }
  });

  it('stops everything it started on SIGINT (Ctrl-C) and frees every port', async () => {
    const schedulerPort = Number(new URL(stack.scheduler.metricsUrl ?? 'http://127.0.0.1:0').port);
    expect(await interrupt(dev), tail()).toBe(0);
    for (const port of [...Object.values(ports), schedulerPort]) {
      expect(await portClosed(port), `port ${port} still open`).toBe(true);
    }
    expect(existsSync(path.join(stateDir, 'stack.json'))).toBe(false);
    // The cluster's data stays for the next run; its server is gone.
    expect(existsSync(path.join(stateDir, 'postgres', 'PG_VERSION'))).toBe(true);
    expect(existsSync(path.join(stateDir, 'postgres', 'postmaster.pid'))).toBe(false);
  }, 45_000);

  it(
    'reuses its PostgreSQL data on a second run (recreating the databases for the new chain); its services die with it',
    async () => {
      dev = startDev();
      const second = await stackOf(dev);
      expect(dev.output()).toContain(`started the embedded PostgreSQL 15 on 127.0.0.1:${ports.postgres}`);
      expect(dev.output()).not.toContain('created and started');
      // dev's own chain died with the first run: what the databases indexed from it is gone with it.
      expect(dev.output()).toContain(
        'the local chain is new: recreated the financial and Supabase-local databases',
      );
      expect(second.users.map((u) => u.availableCents)).toEqual(stack.users.map((u) => u.availableCents));

      // A crash: dev cannot stop anything. Its services and chain follow it (their stdin ends); the
      // PostgreSQL and redis-server it started stay for the next run to adopt.
      const schedulerPort = Number(new URL(second.scheduler.metricsUrl ?? 'http://127.0.0.1:0').port);
      dev.child.kill('SIGKILL');
      await dev.exit;
      const followers = [ports.hotPath, ports.ledgerWriter, ports.supabaseSync, ports.chain, schedulerPort];
      const deadline = Date.now() + 20_000;
      for (const port of followers) {
        while (!(await portClosed(port))) {
          expect(Date.now() < deadline, `port ${port} still open 20 s after dev was killed`).toBe(true);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
      expect(await portClosed(ports.postgres)).toBe(false);
      expect(await portClosed(ports.redis)).toBe(false);
      // PgBouncer is a server too: it outlives dev, and the next run replaces it.
      expect(await portClosed(ports.pgBouncer)).toBe(false);
      expect(existsSync(pgBouncerPidFile(path.join(stateDir, 'pgbouncer')))).toBe(true);
    },
    DEV_START_MS + 40_000,
  );

  it(
    'adopts the PostgreSQL and redis-server a killed dev left running; --observe starts Prometheus scraping every service; Ctrl-C stops them all',
    async () => {
      dev = startDev(['--observe']);
      const observed = await stackOf(dev);
      const prometheus = observed.prometheus?.url;
      expect(prometheus).toBe(`http://127.0.0.1:${ports.prometheus}`);
      // Every service of the stack is a target, and each one answers its scrapes.
      interface Target {
        labels: { job: string };
        health: string;
        lastError: string;
      }
      let active: Target[] = [];
      const deadline = Date.now() + 30_000;
      for (;;) {
        const res = await fetch(`${prometheus}/api/v1/targets`);
        active = ((await res.json()) as { data: { activeTargets: Target[] } }).data.activeTargets;
        if (active.length > 0 && active.every((t) => t.health === 'up')) break;
        expect(Date.now() < deadline, JSON.stringify(active)).toBe(true);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      expect(active.map((t) => t.labels.job).sort()).toEqual(
        [
          'anchorer',
          'hot-path',
          'indexer',
          'ledger-writer',
          'liquidator',
          'scheduler',
          'settlement',
          'supabase-sync',
        ].sort(),
      );
      // The samples are the services' own: the service label each process sets.
      const query = await fetch(
        `${prometheus}/api/v1/query?query=${encodeURIComponent('count by (service) (process_cpu_seconds_total)')}`,
      );
      const series = ((await query.json()) as { data: { result: { metric: { service: string } }[] } }).data
        .result;
      expect(series.map((s) => s.metric.service).sort()).toEqual(active.map((t) => t.labels.job).sort());
      // The repository's rules are loaded.
      const rules = (await (await fetch(`${prometheus}/api/v1/rules`)).json()) as {
        data: { groups: { rules: { name: string }[] }[] };
      };
      const names = rules.data.groups.flatMap((g) => g.rules.map((r) => r.name));
      expect(names).toContain('CredanaChainWorkerLockNotHeld');
      expect(names).toContain('credana:decision_fallback_ratio:rate5m');
      expect(dev.output()).toContain(
        `adopted the running embedded PostgreSQL 15 on 127.0.0.1:${ports.postgres}`,
      );
      expect(dev.output()).toContain(`adopted the running redis-server on ${ports.redis}`);
      expect(dev.output()).toContain('stopping the PgBouncer an earlier dev left running');
      expect(await interrupt(dev), tail()).toBe(0);
      for (const port of Object.values(ports))
        expect(await portClosed(port), `port ${port} still open`).toBe(true);
    },
    DEV_START_MS + 40_000,
  );
});
