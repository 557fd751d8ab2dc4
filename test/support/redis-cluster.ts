/**
 * A private Redis Cluster: six redis-server processes on free loopback ports — three primaries and a
 * replica of each — joined by `redis-cli --cluster create`. Used by the test run's global setup when
 * TEST_REDIS=cluster and by `npm run dev -- --redis-cluster`.
 *
 * Every node keeps an append-only file with `appendfsync always` and `maxmemory-policy noeviction`,
 * as the hot path requires of the Redis that holds its holds and outbox (shared/redis/durability.ts
 * checks each primary). `cluster-node-timeout` is short so a killed primary is failed over in about
 * a second in tests.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './processes.ts';

/** Primaries (each with one replica). Three is the smallest cluster that can fail one over. */
export const CLUSTER_PRIMARIES = 3;
/** Short, so failover takes about a second in tests (the Redis default is 15 s). */
export const TEST_CLUSTER_NODE_TIMEOUT_MS = 1_000;

export interface RedisClusterNode {
  port: number;
  dir: string;
  /** Kills the node's process (SIGKILL unless told otherwise). */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the node again on its port with its data directory (it rejoins from its nodes.conf). */
  start(): Promise<void>;
}

export interface RedisCluster {
  nodes: RedisClusterNode[];
  /** `host:port` of every node, for REDIS_CLUSTER_NODES. */
  seeds: string[];
  /** The root folder of the nodes' data directories. */
  dir: string;
  /** Stops every node and deletes their data. */
  destroy(): Promise<void>;
}

export interface RedisClusterOptions {
  /** cluster-node-timeout (default TEST_CLUSTER_NODE_TIMEOUT_MS). */
  nodeTimeoutMs?: number;
  /** Root folder for the nodes' data (default a new temporary folder, deleted by destroy()). */
  dir?: string;
  /** Log file per node (default: no log). */
  logs?: boolean;
  /**
   * Each node in a process group of its own, so a terminal's Ctrl-C reaches only the parent, which
   * stops the nodes after the services that use them (dev).
   */
  detached?: boolean;
  /**
   * Primaries, each with a replica: CLUSTER_PRIMARIES (default), or 1 holding every slot (the bench's
   * one-primary cluster: cluster mode and its client without more processes than a replicated Redis).
   */
  primaries?: 1 | typeof CLUSTER_PRIMARIES;
}

/** Runs redis-cli with `args`; its stdout, or an error with what it printed. */
export function redisCli(args: readonly string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', args, { encoding: 'utf8', timeout: timeoutMs }, (error, stdout, stderr) =>
      error === null
        ? resolve(stdout)
        : reject(new Error(`redis-cli ${args.join(' ')}: ${stderr || stdout}`)),
    );
  });
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Whether every node answers CLUSTER INFO with cluster_state:ok and knows all six nodes, and every
 * replica has its primary's data (master_link_status:up). Until its first sync a replica cannot be
 * promoted (it counts as disconnected for longer than cluster-replica-validity-factor allows), so a
 * primary killed before then would leave its slots without an owner.
 */
export async function clusterIsOk(
  ports: readonly number[],
  expectedPrimaries: number = CLUSTER_PRIMARIES,
): Promise<boolean> {
  let primaries = 0;
  for (const port of ports) {
    const info = await redisCli(['-p', String(port), 'cluster', 'info'], 5_000);
    if (!/cluster_state:ok/.test(info)) return false;
    if (!new RegExp(`cluster_known_nodes:${ports.length}\\b`).test(info)) return false;
    const replication = await redisCli(['-p', String(port), 'info', 'replication'], 5_000);
    if (/role:master/.test(replication)) {
      if (!/connected_slaves:1\b/.test(replication)) return false;
      primaries++;
    } else if (!/master_link_status:up/.test(replication)) return false;
  }
  return primaries === expectedPrimaries;
}

/** A one-primary cluster: the first node takes every slot, the second replicates it. */
async function createOnePrimary(ports: readonly number[]): Promise<void> {
  const [primary, replica] = ports.map(String) as [string, string];
  await redisCli(['-p', primary, 'cluster', 'addslotsrange', '0', '16383']);
  await redisCli(['-p', replica, 'cluster', 'meet', '127.0.0.1', primary]);
  const id = (await redisCli(['-p', primary, 'cluster', 'myid'])).trim();
  await waitFor(
    async () => (await redisCli(['-p', replica, 'cluster', 'nodes'])).includes(id),
    'the replica to know the primary',
  );
  await redisCli(['-p', replica, 'cluster', 'replicate', id]);
}

/** Starts six nodes, creates the cluster and waits until every node says cluster_state:ok. */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const root = options.dir ?? mkdtempSync(path.join(tmpdir(), 'credana-redis-cluster-'));
  const nodeTimeoutMs = options.nodeTimeoutMs ?? TEST_CLUSTER_NODE_TIMEOUT_MS;
  const ports: number[] = [];
  const primaries = options.primaries ?? CLUSTER_PRIMARIES;
  // freePort() closes the port before returning it: take distinct ones, a primary and a replica each.
  while (ports.length < primaries * 2) {
    const port = await freePort();
    // A node also listens on port + 10000 (the cluster bus), which must be free too.
    if (!ports.includes(port) && port + 10_000 <= 65_535) ports.push(port);
  }
  const nodes = ports.map((port) => clusterNode(root, port, nodeTimeoutMs, options));
  const destroy = async () => {
    await Promise.all(nodes.map((n) => n.kill()));
    if (options.dir === undefined) rmSync(root, { recursive: true, force: true });
  };
  try {
    await Promise.all(nodes.map((n) => n.start()));
    if (primaries === 1) await createOnePrimary(ports);
    else
      await redisCli([
        '--cluster',
        'create',
        ...ports.map((port) => `127.0.0.1:${port}`),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ]);
    await waitFor(() => clusterIsOk(ports, primaries), 'cluster_state:ok on every node');
  } catch (error) {
    await destroy();
    throw error;
  }
  return { nodes, seeds: ports.map((port) => `127.0.0.1:${port}`), dir: root, destroy };
}

function clusterNode(
  root: string,
  port: number,
  nodeTimeoutMs: number,
  options: RedisClusterOptions,
): RedisClusterNode {
  const dir = path.join(root, String(port));
  mkdirSync(dir, { recursive: true });
  let child: ChildProcess | null = null;
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    const c = child;
    if (c === null || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((resolve) => c.once('exit', resolve));
    c.kill(signal);
    await exited;
  };
  const start = async () => {
    child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--maxmemory-policy',
        'noeviction',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-node-timeout',
        String(nodeTimeoutMs),
        // A replica's first sync at once (the default waits 5 s for more replicas to share it).
        '--repl-diskless-sync-delay',
        '0',
        ...(options.logs === true ? ['--logfile', path.join(dir, 'redis.log')] : []),
      ],
      { stdio: 'ignore', detached: options.detached ?? false },
    );
    await waitFor(
      async () => (await redisCli(['-p', String(port), 'ping'], 2_000)).trim() === 'PONG',
      `redis-server (cluster node) on ${port}`,
    );
  };
  return { port, dir, kill, start };
}

/**
 * For the test run's global setup: with TEST_REDIS=cluster, starts the run's private cluster and
 * hands its seeds to every test file (TEST_REDIS_CLUSTER_NODES, read by test/support/env.ts);
 * returns its teardown. With TEST_REDIS unset or `single`, does nothing.
 */
export async function setUpTestRedis(mode: 'single' | 'cluster'): Promise<() => Promise<void>> {
  if (mode !== 'cluster') return async () => {};
  const cluster = await startRedisCluster();
  // The one hand-off from the global setup to the test workers (forked after it, with its environment).
  process.env['TEST_REDIS_CLUSTER_NODES'] = cluster.seeds.join(',');
  return async () => {
    delete process.env['TEST_REDIS_CLUSTER_NODES'];
    await cluster.destroy();
  };
}
