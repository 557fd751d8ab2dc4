/**
 * The chaos run's Redis Cluster (--redis-cluster): the test support's private six-node cluster (three
 * primaries, a replica each, cluster-node-timeout 1 s) and its failovers. `redis_failover` SIGKILLs the
 * primary that owns a shard's slots, waits until the cluster promotes its replica, keeps it down for the
 * rest of the fault, starts it again and waits until it has rejoined as the new primary's replica (in
 * sync); `redis_failover_manual` sends CLUSTER FAILOVER to that primary's replica (a graceful switch:
 * the replica catches up first) and waits until it is the primary.
 */
import { performance } from 'node:perf_hooks';
import {
  clusterIsOk,
  type RedisCluster,
  redisCli,
  startRedisCluster,
  TEST_CLUSTER_NODE_TIMEOUT_MS,
} from '../../test/support/redis-cluster.ts';
import { type RedisTarget, track } from './system.ts';

const SLOTS = 16_384;
/** How long a failover, a restart or a rejoin may take before the fault records an error. */
const FAILOVER_WAIT_MS = 30_000;

interface NodeLine {
  id: string;
  port: number;
  primary: boolean;
  failed: boolean;
  primaryId: string;
  slots: [number, number][];
}

/** CLUSTER NODES as one live node sees it. */
function parseNodes(text: string): NodeLine[] {
  return text
    .trim()
    .split('\n')
    .map((line) => {
      const [id = '', address = '', flags = '', primaryId = '', , , , , ...slots] = line.split(' ');
      return {
        id,
        port: Number(address.split('@')[0]?.split(':')[1]),
        primary: flags.split(',').includes('master'),
        failed: /fail/.test(flags),
        primaryId,
        slots: slots
          .filter((s) => /^\d+(-\d+)?$/.test(s))
          .map((s) => {
            const [a, b] = s.split('-').map(Number);
            return [a!, b ?? a!] as [number, number];
          }),
      };
    });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  const until = performance.now() + FAILOVER_WAIT_MS;
  while (performance.now() < until) {
    if (await check().catch(() => false)) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export async function clusterRedis(): Promise<RedisTarget> {
  const cluster: RedisCluster = await startRedisCluster({ nodeTimeoutMs: TEST_CLUSTER_NODE_TIMEOUT_MS });
  const ports = cluster.nodes.map((n) => n.port);
  const down = new Set<number>();
  /** The cluster's view from the first node that answers (and is not one the harness killed). */
  const view = async (): Promise<NodeLine[]> => {
    for (const port of ports) {
      if (down.has(port)) continue;
      const text = await redisCli(['-p', String(port), 'cluster', 'nodes'], 5_000).catch(() => null);
      if (text !== null) return parseNodes(text);
    }
    throw new Error('no cluster node answers');
  };
  const ownerOf = (nodes: NodeLine[], slot: number) =>
    nodes.find((n) => n.primary && !n.failed && n.slots.some(([a, b]) => a <= slot && slot <= b));
  return {
    host: '127.0.0.1',
    port: ports[0]!,
    clusterNodes: cluster.seeds,
    async failover(shard, how, downMs) {
      const started = performance.now();
      const slot = Math.floor((shard * SLOTS) / 3) + 1;
      const primary = ownerOf(await view(), slot);
      if (primary === undefined) throw new Error(`no primary owns slot ${slot}`);
      const node = cluster.nodes.find((n) => n.port === primary.port);
      if (node === undefined) throw new Error(`no node on ${primary.port}`);
      const promoted = async () => {
        const owner = ownerOf(await view(), slot);
        return owner !== undefined && owner.port !== primary.port;
      };
      if (how === 'manual') {
        const replica = (await view()).find((n) => !n.primary && n.primaryId === primary.id && !n.failed);
        if (replica === undefined) throw new Error(`primary ${primary.port} has no replica`);
        await redisCli(['-p', String(replica.port), 'cluster', 'failover']);
        await waitFor(promoted, `replica ${replica.port} promoted`);
        const tookMs = Math.round(performance.now() - started);
        await sleep(Math.max(0, downMs - tookMs));
        return `slot ${slot}: CLUSTER FAILOVER on ${replica.port}, primary ${primary.port} → ${replica.port} in ${tookMs} ms`;
      }
      down.add(primary.port);
      await node.kill('SIGKILL');
      let promotedMs = -1;
      let newOwner: number | undefined;
      try {
        await waitFor(promoted, `a replica promoted in place of ${primary.port}`);
        promotedMs = Math.round(performance.now() - started);
        newOwner = ownerOf(await view(), slot)?.port;
        await sleep(Math.max(0, downMs - promotedMs));
      } finally {
        // Started again even when the promotion did not come: a node left down would be every later
        // fault's and the checker's problem.
        await node.start();
        down.delete(primary.port);
      }
      await waitFor(() => clusterIsOk(ports), `${primary.port} rejoined as a replica`);
      const rejoinedMs = Math.round(performance.now() - started);
      return `slot ${slot}: killed primary ${primary.port}, ${newOwner} promoted at ${promotedMs} ms, ${primary.port} back as a replica at ${rejoinedMs} ms`;
    },
    destroy: track(() => cluster.destroy()),
  };
}
