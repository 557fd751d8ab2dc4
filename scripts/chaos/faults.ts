/**
 * The fault schedule: drawn from the seed before the run starts (so a seed replays the same faults), in
 * two lanes that may overlap — one for processes (SIGKILL, SIGSTOP/SIGCONT), one for the servers and the
 * network (Redis killed and restarted, Postgres stopped immediately and restarted, stalls, one-way
 * partitions, cuts and latency through each process's TCP proxies) — and, with the chain, a third for the
 * chain workers (the indexer and the settlement worker SIGKILLed or SIGSTOPped, their chain RPC stalled,
 * cut or slowed); then played against the system. The third lane is drawn after the other two, so a seed
 * plays the same first two lanes with the chain and without it. Clock offsets (`planClockFaults`) come
 * from a stream of their own and only when asked for, so they move no other fault of any seed.
 * A fourth lane is the liquidator's (LIQUIDATOR_FAULTS); a fifth, drawn last, the withdrawal
 * approver's (WITHDRAWALS_FAULTS).
 */
import { performance } from 'node:perf_hooks';
import type { FaultKind, FaultRecord } from './history.ts';
import type { Random } from './random.ts';
import type { ChaosSystem, ManagedProcess } from './system.ts';

export const PROCESS_FAULTS: FaultKind[] = ['kill_hot_path', 'kill_writer', 'stop_process'];
export const SERVER_FAULTS: FaultKind[] = [
  'redis_kill_restart',
  'postgres_stop_restart',
  'redis_stall',
  'redis_one_way',
  'redis_cut',
  'redis_latency',
  'postgres_stall',
  'postgres_cut',
  'postgres_latency',
];

/**
 * Redis restarted empty (SIGKILL, its AOF and RDB deleted, started again: a node replaced). In the
 * servers lane, but drawn only when `--faults` names it: adding it to SERVER_FAULTS would change every
 * seed's draws. When named, the servers lane picks among the named kinds of SERVER_FAULTS and it, so
 * `--faults=redis_empty_restart` plays it in every slot of that lane; runs that do not name it draw
 * exactly as before.
 */
export const REDIS_EMPTY_RESTART: FaultKind = 'redis_empty_restart';
/**
 * Redis Cluster mode (--redis-cluster): played in the server lane in place of Redis kinds that need a
 * single server or a proxy in front of it. The services talk to the nodes directly (a cluster client
 * follows the nodes' announced addresses, so a per-process proxy cannot sit in front of it), hence
 * `redis_kill_restart` is drawn as `redis_failover` and `redis_cut` as `redis_failover_manual`, and the
 * other proxy kinds (`redis_stall`, `redis_one_way`, `redis_latency`) are drawn but not played. The
 * draws for the single-Redis kinds are unchanged, so a seed without the flag plays what it always did.
 */
export const CLUSTER_FAULTS: FaultKind[] = ['redis_failover', 'redis_failover_manual'];
const CLUSTER_REPLACES: Partial<Record<FaultKind, FaultKind | null>> = {
  redis_kill_restart: 'redis_failover',
  redis_cut: 'redis_failover_manual',
  redis_stall: null,
  redis_one_way: null,
  redis_latency: null,
};
/** Primaries of the chaos cluster (test/support/redis-cluster.ts CLUSTER_PRIMARIES); `shard-<i>` targets. */
const CLUSTER_SHARDS = 3;

export const CHAIN_FAULTS: FaultKind[] = [
  'kill_indexer',
  'kill_settlement',
  'stop_chain_worker',
  'rpc_stall',
  'rpc_cut',
  'rpc_latency',
];

/**
 * A hot path's or the writer's wall clock off by a seeded amount for the fault's duration (its machine's
 * NTP skew, stepped in at the start and stepped back at the end; scripts/chaos/clock-offset.mjs).
 */
export const CLOCK_FAULTS: FaultKind[] = ['clock_offset'];

/**
 * The liquidator's faults: a lane of their own, drawn after every other lane (so a seed's other faults
 * stay where they were before the liquidator ran), every one aimed at `liquidator-0`. The chain lane's
 * RPC faults on `all` reach it too.
 */
export const LIQUIDATOR_FAULTS: FaultKind[] = [
  'kill_liquidator',
  'stop_chain_worker',
  'rpc_stall',
  'rpc_cut',
  'rpc_latency',
];
const LIQUIDATOR = 'liquidator-0';

/**
 * The withdrawal approver's faults: a lane of its own, drawn after the liquidator's (so every earlier
 * lane of every seed is unchanged), every one aimed at `withdrawals-0`: killed and restarted, stopped,
 * its chain RPC cut. The other lanes' proxy faults on `all` (Redis, Postgres, RPC) reach it too.
 */
export const WITHDRAWALS_FAULTS: FaultKind[] = ['kill_withdrawals', 'stop_chain_worker', 'rpc_cut'];
/** The lane's draw: a kill a fifth of the time (a restart takes 5–15 s on this machine, most of a run). */
const WITHDRAWALS_DRAW: FaultKind[] = [
  'kill_withdrawals',
  'stop_chain_worker',
  'stop_chain_worker',
  'rpc_cut',
  'rpc_cut',
];
const WITHDRAWALS = 'withdrawals-0';

export interface ScheduleOptions {
  durationMs: number;
  hotPaths: number;
  writers: number;
  /** Whether the harness owns the Redis server (else no Redis kill). */
  redisKillable: boolean;
  /** The run has the chain (and its workers): the chain lane is drawn too. */
  chain?: boolean;
  /** Only these kinds (default: all). The draws are the same, so a seed's other faults stay where they were. */
  kinds?: readonly FaultKind[];
  /** Redis is a cluster: the Redis kinds are replaced or dropped (CLUSTER_FAULTS); dropped ones are pushed to `dropped`. */
  redisCluster?: { dropped: FaultKind[] };
}

/** The faults of one run, in order of planned start, each with its target and duration. */
export function planFaults(rand: Random, o: ScheduleOptions): FaultRecord[] {
  const faults: FaultRecord[] = [];
  const endMs = o.durationMs - 1_000;
  const chainLane = () => {
    let atMs = rand.int(500, 2_000);
    while (atMs < endMs) {
      const kind = rand.pick(CHAIN_FAULTS);
      const durationMs = Math.min(rand.int(300, 4_000), Math.max(100, endMs - atMs));
      let target = 'all';
      let detail = '';
      if (kind === 'kill_indexer') target = 'indexer-0';
      if (kind === 'kill_settlement') target = 'settlement-0';
      if (kind === 'stop_chain_worker') target = rand.pick(['indexer-0', 'settlement-0']);
      if (kind.startsWith('rpc_')) target = rand.pick(['all', 'indexer-0', 'settlement-0']);
      if (kind === 'rpc_latency') detail = `${rand.int(20, 400)}ms`;
      if (o.kinds?.includes(kind) ?? true)
        faults.push({ kind, target, detail, plannedAtMs: atMs, durationMs, startedMs: null, endedMs: null });
      atMs += durationMs + rand.int(300, 2_500);
    }
  };
  const lane = (laneKinds: FaultKind[]) => {
    // Not on a cluster (its nodes are failed over, not emptied).
    const empty =
      laneKinds === SERVER_FAULTS &&
      o.redisKillable &&
      o.redisCluster === undefined &&
      o.kinds?.includes(REDIS_EMPTY_RESTART);
    const kinds = empty ? [...laneKinds, REDIS_EMPTY_RESTART].filter((k) => o.kinds?.includes(k)) : laneKinds;
    let atMs = rand.int(500, 2_000);
    while (atMs < endMs) {
      const drawn = rand.pick(kinds);
      const durationMs = Math.min(rand.int(300, 4_000), Math.max(100, endMs - atMs));
      const replaced = o.redisCluster === undefined ? drawn : CLUSTER_REPLACES[drawn];
      const kind = replaced === undefined ? drawn : replaced;
      if (kind === null) {
        o.redisCluster?.dropped.push(drawn);
        atMs += durationMs + rand.int(300, 2_500);
        continue;
      }
      let target = 'all';
      let detail = '';
      // Which primary: the one that owns shard i's slots when the fault starts (a draw only in cluster mode).
      if (CLUSTER_FAULTS.includes(kind)) target = `shard-${rand.int(0, CLUSTER_SHARDS - 1)}`;
      if (kind === 'kill_hot_path') target = `hot-path-${rand.int(0, o.hotPaths - 1)}`;
      if (kind === 'kill_writer') target = `writer-${rand.int(0, o.writers - 1)}`;
      if (kind === 'stop_process') {
        const all = [
          ...Array.from({ length: o.hotPaths }, (_, i) => `hot-path-${i}`),
          ...Array.from({ length: o.writers }, (_, i) => `writer-${i}`),
        ];
        target = rand.pick(all);
      }
      if ((kind.startsWith('redis_') || kind.startsWith('postgres_')) && !CLUSTER_FAULTS.includes(kind)) {
        if (
          kind !== 'redis_kill_restart' &&
          kind !== REDIS_EMPTY_RESTART &&
          kind !== 'postgres_stop_restart'
        ) {
          // A proxy fault hits every process or one of them (some reach the server, others do not).
          const names = [
            'all',
            ...Array.from({ length: o.hotPaths }, (_, i) => `hot-path-${i}`),
            ...Array.from({ length: o.writers }, (_, i) => `writer-${i}`),
          ];
          target = rand.pick(names);
        } else target = kind.startsWith('redis') ? 'redis' : 'postgres';
      }
      if (kind === 'redis_one_way') detail = rand.pick(['toUpstream', 'toClient']);
      if (kind === 'redis_latency' || kind === 'postgres_latency') detail = `${rand.int(20, 400)}ms`;
      const usable = (kind !== 'redis_kill_restart' || o.redisKillable) && (o.kinds?.includes(kind) ?? true);
      if (usable) {
        faults.push({ kind, target, detail, plannedAtMs: atMs, durationMs, startedMs: null, endedMs: null });
      }
      atMs += durationMs + rand.int(300, 2_500);
    }
  };
  const liquidatorLane = () => {
    let atMs = rand.int(1_000, 4_000);
    while (atMs < endMs) {
      const kind = rand.pick(LIQUIDATOR_FAULTS);
      const durationMs = Math.min(rand.int(300, 4_000), Math.max(100, endMs - atMs));
      const detail = kind === 'rpc_latency' ? `${rand.int(20, 400)}ms` : '';
      if (o.kinds?.includes(kind) ?? true)
        faults.push({
          kind,
          target: LIQUIDATOR,
          detail,
          plannedAtMs: atMs,
          durationMs,
          startedMs: null,
          endedMs: null,
        });
      atMs += durationMs + rand.int(1_000, 5_000);
    }
  };
  lane(PROCESS_FAULTS);
  lane(SERVER_FAULTS);
  if (o.chain === true) chainLane();
  if (o.chain === true) liquidatorLane();
  if (o.chain === true) faults.push(...withdrawalsLane(rand, endMs, o.kinds));
  return faults.sort((a, b) => a.plannedAtMs - b.plannedAtMs);
}

/** The withdrawal approver's lane (drawn last, from the same stream): see WITHDRAWALS_FAULTS. */
function withdrawalsLane(
  rand: Random,
  endMs: number,
  kinds: readonly FaultKind[] | undefined,
): FaultRecord[] {
  const faults: FaultRecord[] = [];
  let atMs = rand.int(3_000, 8_000);
  while (atMs < endMs) {
    const kind = rand.pick(WITHDRAWALS_DRAW);
    const durationMs = Math.min(rand.int(300, 2_500), Math.max(100, endMs - atMs));
    if (kinds?.includes(kind) ?? true)
      faults.push({
        kind,
        target: WITHDRAWALS,
        detail: '',
        plannedAtMs: atMs,
        durationMs,
        startedMs: null,
        endedMs: null,
      });
    // Sparse: an approver that is always down approves nothing.
    atMs += durationMs + rand.int(4_000, 10_000);
  }
  return faults;
}

/**
 * The clock faults: one lane per hot path and writer (each machine has a clock of its own, so two may be
 * off at once, in opposite directions), each offset ±2–10 s or ±10–90 s (within Stripe's 300 s signature
 * tolerance: a clock hours off only refuses every webhook). Drawn only when `clock_offset` is asked for
 * (`--faults=…,clock_offset`), from its own stream (run.ts: `deriveRandom(seed, 'clock')`), so adding the
 * kind changed no existing seed's schedule.
 */
export function planClockFaults(
  rand: Random,
  o: Pick<ScheduleOptions, 'durationMs' | 'hotPaths' | 'writers'>,
) {
  const faults: FaultRecord[] = [];
  const endMs = o.durationMs - 1_000;
  const names = [
    ...Array.from({ length: o.hotPaths }, (_, i) => `hot-path-${i}`),
    ...Array.from({ length: o.writers }, (_, i) => `writer-${i}`),
  ];
  for (const target of names) {
    let atMs = rand.int(300, 2_000);
    while (atMs < endMs) {
      const sign = rand.chance(0.5) ? 1 : -1;
      const offsetMs = sign * (rand.chance(0.5) ? rand.int(2_000, 10_000) : rand.int(10_000, 90_000));
      const durationMs = Math.min(rand.int(1_000, 6_000), Math.max(100, endMs - atMs));
      const detail = `${offsetMs > 0 ? '+' : ''}${offsetMs}ms`;
      faults.push({
        kind: 'clock_offset',
        target,
        detail,
        plannedAtMs: atMs,
        durationMs,
        startedMs: null,
        endedMs: null,
      });
      atMs += durationMs + rand.int(300, 2_500);
    }
  }
  return faults.sort((a, b) => a.plannedAtMs - b.plannedAtMs);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function targets(system: ChaosSystem, target: string, chainOnly = false): ManagedProcess[] {
  const pool = chainOnly ? system.processes.filter((p) => p.rpcProxy !== null) : system.processes;
  return target === 'all' ? pool : pool.filter((p) => p.name === target);
}

/** Plays one fault: start, hold for its duration, end. Errors are recorded in the fault's detail. */
async function play(system: ChaosSystem, f: FaultRecord, now: () => number): Promise<void> {
  f.startedMs = now();
  const procs = targets(
    system,
    f.target,
    CHAIN_FAULTS.includes(f.kind) || f.kind === 'kill_liquidator' || f.kind === 'kill_withdrawals',
  );
  try {
    switch (f.kind) {
      case 'kill_hot_path':
      case 'kill_writer':
      case 'kill_indexer':
      case 'kill_settlement':
      case 'kill_liquidator':
      case 'kill_withdrawals':
        for (const p of procs) await system.kill(p);
        await sleep(f.durationMs);
        for (const p of procs) await system.restart(p);
        break;
      case 'stop_process':
      case 'stop_chain_worker':
        for (const p of procs) system.sigstop(p);
        await sleep(f.durationMs);
        for (const p of procs) system.sigcont(p);
        break;
      case 'redis_kill_restart':
        await system.redisTarget.killAndRestart?.(f.durationMs);
        break;
      case 'redis_empty_restart':
        await system.redisTarget.emptyRestart?.(f.durationMs);
        break;
      case 'redis_failover':
      case 'redis_failover_manual': {
        const failover = system.redisTarget.failover;
        if (failover === undefined) throw new Error('Redis is not a cluster the harness owns');
        const shard = Number(f.target.slice('shard-'.length));
        const how = f.kind === 'redis_failover' ? 'kill' : 'manual';
        f.detail = await failover(shard, how, f.durationMs);
        break;
      }
      case 'postgres_stop_restart':
        await system.postgres.cluster.stopAsync();
        await sleep(f.durationMs);
        await system.postgres.cluster.startAsync();
        break;
      case 'redis_stall':
      case 'postgres_stall':
      case 'redis_one_way': {
        const proxies = procs.map((p) => (f.kind === 'postgres_stall' ? p.pgProxy : p.redisProxy));
        for (const proxy of proxies)
          proxy.stall(f.kind === 'redis_one_way' ? (f.detail as 'toUpstream' | 'toClient') : 'both');
        await sleep(f.durationMs);
        for (const proxy of proxies) proxy.resume();
        break;
      }
      case 'redis_cut':
      case 'postgres_cut': {
        // A partition that drops the connections: stalled (new ones hang) and cut, then resumed.
        const proxies = procs.map((p) => (f.kind === 'postgres_cut' ? p.pgProxy : p.redisProxy));
        for (const proxy of proxies) {
          proxy.stall();
          proxy.cut();
        }
        await sleep(f.durationMs);
        for (const proxy of proxies) proxy.resume();
        break;
      }
      case 'rpc_stall':
      case 'rpc_cut': {
        const proxies = procs.flatMap((p) => (p.rpcProxy === null ? [] : [p.rpcProxy]));
        for (const proxy of proxies) {
          proxy.stall();
          if (f.kind === 'rpc_cut') proxy.cut();
        }
        await sleep(f.durationMs);
        for (const proxy of proxies) proxy.resume();
        break;
      }
      case 'rpc_latency': {
        const proxies = procs.flatMap((p) => (p.rpcProxy === null ? [] : [p.rpcProxy]));
        for (const proxy of proxies) proxy.setLatencyMs(Number.parseInt(f.detail, 10));
        await sleep(f.durationMs);
        for (const proxy of proxies) proxy.setLatencyMs(0);
        break;
      }
      case 'clock_offset':
        for (const p of procs) system.setClockOffset(p, Number.parseInt(f.detail, 10));
        await sleep(f.durationMs);
        for (const p of procs) system.setClockOffset(p, 0);
        break;
      case 'redis_latency':
      case 'postgres_latency': {
        const proxies = procs.map((p) => (f.kind === 'postgres_latency' ? p.pgProxy : p.redisProxy));
        for (const proxy of proxies) proxy.setLatencyMs(Number.parseInt(f.detail, 10));
        await sleep(f.durationMs);
        for (const proxy of proxies) proxy.setLatencyMs(0);
        break;
      }
    }
  } catch (error) {
    f.detail = `${f.detail} error: ${String(error).slice(0, 200)}`.trim();
  }
  f.endedMs = now();
}

/**
 * Plays the schedule (each fault at its planned time; a fault still running delays the next of its lane).
 * `onEnded` is called as each fault ends (run.ts: the operator's runbook after a `redis_empty_restart`);
 * it changes nothing of the schedule.
 */
export async function playFaults(
  system: ChaosSystem,
  faults: FaultRecord[],
  startedMs: number,
  onEnded: (f: FaultRecord) => void = () => undefined,
): Promise<void> {
  const now = () => performance.now() - startedMs;
  const lanes = [
    faults.filter((f) => PROCESS_FAULTS.includes(f.kind)),
    faults.filter(
      (f) =>
        SERVER_FAULTS.includes(f.kind) || f.kind === REDIS_EMPTY_RESTART || CLUSTER_FAULTS.includes(f.kind),
    ),
    faults.filter(
      (f) => CHAIN_FAULTS.includes(f.kind) && f.target !== LIQUIDATOR && f.target !== WITHDRAWALS,
    ),
    faults.filter((f) => f.target === LIQUIDATOR),
    faults.filter((f) => f.target === WITHDRAWALS),
    // One clock lane per process (planClockFaults).
    ...[...new Set(faults.filter((f) => f.kind === 'clock_offset').map((f) => f.target))].map((target) =>
      faults.filter((f) => f.kind === 'clock_offset' && f.target === target),
    ),
  ];
  await Promise.all(
    lanes.map(async (lane) => {
      for (const f of lane) {
        const wait = f.plannedAtMs - now();
        if (wait > 0) await sleep(wait);
        await play(system, f, now);
        onEnded(f);
      }
    }),
  );
}
