/**
 * One chaos seed end to end: start the system, seed users, play the workload and the seed's fault
 * schedule together for the run's duration, heal (every proxy resumed, every process running), let
 * Stripe's retries and the ledger writer drain, gather the facts from Postgres and Redis, and check.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { outboxBacklog } from '../../ledger-writer/testing.ts';
import { ACCOUNT, deadLetterKey, userKeys } from '../../shared/redis/keys.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
import {
  CHAIN_CONFIRMATIONS,
  type ChainSide,
  chainDrained,
  gatherChainFacts,
  startChainSide,
} from './chain.ts';
import { CHECK_DEFAULTS, checkHistory, minimalHistory, type Violation } from './checker.ts';
import { planClockFaults, planFaults, playFaults } from './faults.ts';
import type { ChaosHistory, FaultKind, FinalFacts } from './history.ts';
import { deriveRandom } from './random.ts';
import { clusterRedis } from './redis-cluster.ts';
import { type ChaosSystem, externalRedis, type PostgresSide, privateRedis, startSystem } from './system.ts';
import { INITIAL_PRICE_E8, Workload } from './workload.ts';

export interface RunOptions {
  durationS: number;
  hotPaths: number;
  writers: number;
  users: number;
  concurrency: number;
  /** A Redis to use instead of a private server; no Redis server faults then. */
  redisUrl: string | null;
  /**
   * A private Redis Cluster (redis-cluster.ts) instead of one server: the services connect to its nodes
   * directly, the hot paths with REDIS_WAIT_REPLICAS=1; the cluster fault kinds replace the proxy ones.
   */
  redisCluster: boolean;
  fallbackGrantCentsMax: number;
  /** How long the system may take to drain and heal after the faults stop. */
  healTimeoutMs: number;
  postgresRoute: 'pgbouncer' | 'direct';
  /** Fault kinds to play (null: all). */
  faultKinds: readonly FaultKind[] | null;
  /** false: the workload alone (a baseline that must be clean). */
  faults: boolean;
  /** Run the chain too (chain.ts): a Hardhat node, the indexer, the settlement worker, chain faults. */
  chain: boolean;
  /**
   * After each `redis_empty_restart`, play the operator's runbook (docs/operations.md "Losing Redis"
   * steps 2–3: `cache:warm`, then resend the window's lifecycle events); false: `--no-runbook`.
   */
  runbook: boolean;
  log: (line: string) => void;
}

export const RUN_DEFAULTS: Omit<RunOptions, 'log'> = {
  durationS: 30,
  hotPaths: 2,
  writers: 1,
  users: 6,
  concurrency: 4,
  redisUrl: null,
  redisCluster: false,
  fallbackGrantCentsMax: 5_000,
  healTimeoutMs: 120_000,
  faults: true,
  chain: false,
  runbook: true,
  postgresRoute: 'pgbouncer',
  faultKinds: null,
};

export interface SeedResult {
  seed: number;
  durationS: number;
  faultsByKind: Record<string, number>;
  requests: number;
  answered: number;
  approvals: number;
  reasons: Record<string, number>;
  lifecycleEvents: number;
  deliveries: number;
  priceMoves: number;
  processRestarts: number;
  violations: Violation[];
  /** Where the whole history was written. */
  historyPath: string;
  elapsedMs: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitUntil(check: () => Promise<boolean>, untilMs: number): Promise<boolean> {
  while (performance.now() < untilMs) {
    try {
      if (await check()) return true;
    } catch {
      // A server still coming back.
    }
    await sleep(200);
  }
  return false;
}

/**
 * Waits (until `healDeadline`) for the system to drain: the outbox, the fallback decisions and, with
 * the chain, the indexer and the settlements.
 */
async function waitForDrain(
  system: ChaosSystem,
  chain: ChainSide | null,
  prefix: string,
  healDeadline: number,
): Promise<void> {
  const sql = system.database.sql;
  // Drained: the outbox empty, every fallback decision adopted and, with the chain, the indexer at the
  // head and every settlement confirmed, several times in a row: an adoption may add outbox entries, and
  // a capture the writer books last becomes a settlement only at the settlement worker's next poll (a
  // settlement confirmed between reading the balances and the settled cents would skew the fold).
  let stable = 0;
  await waitUntil(async () => {
    const [row] = await sql<
      { n: number }[]
    >`select count(*)::int as n from fallback_decisions where adopted_at is null`;
    const clean =
      (await outboxBacklog(system.redis, prefix)) === 0 &&
      row?.n === 0 &&
      (chain === null || (await chainDrained(chain, sql)));
    stable = clean ? stable + 1 : 0;
    return stable >= (chain === null ? 2 : 8);
  }, healDeadline);
}

/** The checker's violations plus what never healed and every process that exited on its own. */
function runViolations(
  history: ChaosHistory,
  facts: FinalFacts,
  system: ChaosSystem,
  unacked: number,
  undelivered: number,
  startedMs: number,
): Violation[] {
  const violations = checkHistory(history, facts, CHECK_DEFAULTS);
  if (unacked > 0) {
    violations.push({
      kind: 'not_healed',
      userId: null,
      atMs: null,
      message: `${unacked} chain values never shown in Redis`,
      eventIds: [],
    });
  }
  if (undelivered > 0) {
    violations.push({
      kind: 'not_healed',
      userId: null,
      atMs: null,
      message: `${undelivered} lifecycle events never acknowledged`,
      eventIds: [],
    });
  }
  for (const p of system.processes) {
    for (const crash of p.crashes) {
      // A lock-holding chain worker stops by design when its Postgres session (and so its lock) ends
      // (shared/chain/locked-loop.ts, docs/operations.md); the supervisor starts it again.
      if (p.rpcProxy !== null && crash.output.includes('"code":"session_lock_lost"')) continue;
      violations.push({
        kind: 'process_crash',
        userId: null,
        atMs: null,
        message: `${p.name} exited on its own (${crash.exit}) at ${Math.round(crash.atMs - startedMs)} ms: ${crash.output.slice(-1_200)}`,
        eventIds: [],
      });
    }
  }
  return violations;
}

/** The seed's counts for the report. */
function summarize(
  seed: number,
  options: RunOptions,
  history: ChaosHistory,
  system: ChaosSystem,
  violations: Violation[],
  historyPath: string,
  runStarted: number,
): SeedResult {
  const faultsByKind: Record<string, number> = {};
  for (const f of history.faults)
    if (f.startedMs !== null) faultsByKind[f.kind] = (faultsByKind[f.kind] ?? 0) + 1;
  const reasons: Record<string, number> = {};
  for (const r of history.requests) {
    const key = r.answer?.reason ?? 'no_answer';
    reasons[key] = (reasons[key] ?? 0) + 1;
  }
  return {
    seed,
    durationS: options.durationS,
    faultsByKind,
    requests: history.requests.length,
    answered: history.requests.filter((r) => r.answer !== null).length,
    approvals: history.requests.filter((r) => r.answer?.approved === true).length,
    reasons,
    lifecycleEvents: history.lifecycle.length,
    deliveries: history.lifecycle.reduce((n, e) => n + e.deliveries.length, 0),
    priceMoves: history.prices.length,
    processRestarts: system.processes.reduce((n, p) => n + p.restarts, 0),
    violations,
    historyPath,
    elapsedMs: performance.now() - runStarted,
  };
}

export async function runSeed(
  postgres: PostgresSide,
  seed: number,
  options: RunOptions,
): Promise<SeedResult> {
  const runStarted = performance.now();
  const redisTarget = options.redisCluster
    ? await clusterRedis()
    : options.redisUrl === null
      ? await privateRedis()
      : externalRedis(options.redisUrl);
  const prefix = `chaos${seed}:`;
  const chain = options.chain ? await startChainSide() : null;
  // Clock offsets only when asked for by name (faults.ts planClockFaults).
  const clockOffsets = options.faults && (options.faultKinds?.includes('clock_offset') ?? false);
  const system = await startSystem(redisTarget, postgres, {
    chain,
    clockOffsets,
    prefix,
    databaseName: `chaos_s${seed}`,
    hotPaths: options.hotPaths,
    writers: options.writers,
    fallbackGrantCentsMax: options.fallbackGrantCentsMax,
    postgresRoute: options.postgresRoute,
  }).catch(async (error: unknown) => {
    // A start that failed (a service silent for 60 s on a loaded machine) leaves nothing running.
    await redisTarget.destroy().catch(() => undefined);
    await chain?.destroy().catch(() => undefined);
    throw error;
  });
  const history: ChaosHistory = {
    seed,
    durationS: options.durationS,
    initialPriceE8: INITIAL_PRICE_E8.toString(),
    fallbackGrantCentsMax: options.fallbackGrantCentsMax,
    users: [],
    requests: [],
    replays: [],
    lifecycle: [],
    prices: [],
    faults: [],
  };
  const durationMs = options.durationS * 1_000;
  try {
    const startedMs = performance.now();
    const workload = new Workload(system, deriveRandom(seed, 'workload'), prefix, startedMs, history);
    await workload.seed({ ...options, seed });
    const dropped: FaultKind[] = [];
    history.faults = !options.faults
      ? []
      : planFaults(deriveRandom(seed, 'faults'), {
          durationMs,
          hotPaths: options.hotPaths,
          writers: options.writers,
          redisKillable: redisTarget.killAndRestart !== undefined,
          chain: chain !== null,
          ...(options.redisCluster ? { redisCluster: { dropped } } : {}),
          ...(options.faultKinds === null ? {} : { kinds: options.faultKinds }),
        });
    if (clockOffsets) {
      const clock = planClockFaults(deriveRandom(seed, 'clock'), {
        durationMs,
        hotPaths: options.hotPaths,
        writers: options.writers,
      });
      history.faults = [...history.faults, ...clock].sort((a, b) => a.plannedAtMs - b.plannedAtMs);
    }
    options.log(`seed ${seed}: ${history.faults.length} faults planned over ${options.durationS} s`);
    if (options.redisCluster)
      options.log(
        `seed ${seed}: Redis Cluster mode — redis_kill_restart played as redis_failover, redis_cut as redis_failover_manual; ${dropped.length} proxy fault(s) drawn and not played (the services reach the nodes directly): ${dropped.join(', ') || 'none'}`,
      );
    const loadStartedMs = performance.now();
    // Every time in the history counts from `startedMs`; the schedule was drawn from the load's start.
    const offsetMs = loadStartedMs - startedMs;
    for (const f of history.faults) f.plannedAtMs += offsetMs;
    await Promise.all([
      workload.run(options, offsetMs + durationMs),
      playFaults(system, history.faults, startedMs, (f) => {
        if (options.runbook && f.kind === 'redis_empty_restart' && !f.detail.includes('error'))
          workload.playRedisLossRunbook(f, {
            windowMs: CHECK_DEFAULTS.emptyRestartLagMs ?? 0,
            lagWaitMs: RUNBOOK_LAG_WAIT_MS,
            outboxBacklog: () => outboxBacklog(system.redis, prefix),
            cacheWarm: () => cacheWarm(system, redisTarget, prefix),
          });
      }),
    ]);
    await system.heal();
    const healDeadline = performance.now() + options.healTimeoutMs;
    const undelivered = await workload.drainDeliveries(options.healTimeoutMs);
    const sql = system.database.sql;
    // Blocks on top so every deposit, cancel and price rise is confirmed.
    if (chain !== null) await chain.actions.mine(CHAIN_CONFIRMATIONS + 1);
    await waitForDrain(system, chain, prefix, healDeadline);

    const unacked = await workload.drainChain(Math.max(1_000, healDeadline - performance.now()));
    const facts = await gatherFacts(
      system,
      prefix,
      history.users.map((u) => u.userId),
    );
    if (chain !== null) facts.chain = await gatherChainFacts(chain, sql, system.redis, prefix, history.users);
    const violations = runViolations(history, facts, system, unacked, undelivered, startedMs);
    const historyPath = path.join(tmpdir(), `credana-chaos-seed-${seed}.json`);
    writeFileSync(historyPath, JSON.stringify({ history, facts }, null, 1));
    if (violations.length > 0) {
      for (const p of system.processes) {
        options.log(`--- ${p.name} output (last) ---\n${(p.current?.output() ?? '').slice(-1_500)}`);
      }
    }
    return summarize(seed, options, history, system, violations, historyPath, runStarted);
  } finally {
    await system.close();
    await redisTarget.destroy();
    await chain?.destroy();
  }
}

/** How long the runbook waits for the writer's lag to be 0 (the outbox empty) before `cache:warm`. */
const RUNBOOK_LAG_WAIT_MS = 5_000;

/**
 * `npm run cache:warm` (scripts/cache-warm.ts) as an operator runs it after Redis lost its data: the
 * services' database, Redis (directly, not through a process's proxy), key prefix and chain id.
 */
function cacheWarm(
  system: ChaosSystem,
  redisTarget: { host: string; port: number },
  prefix: string,
): Promise<{ exit: string; output: string }> {
  const env = {
    PATH: process.env['PATH'] ?? '',
    NODE_ENV: 'test',
    LOG_LEVEL: 'error',
    DATABASE_URL: system.databaseUrl,
    REDIS_URL: `redis://${redisTarget.host}:${redisTarget.port}`,
    REDIS_KEY_PREFIX: prefix,
    CHAIN_ID: String(system.chain?.contracts.chainId ?? 31_337),
  };
  const script = path.join(import.meta.dirname, '..', 'cache-warm.ts');
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', script],
      { env, timeout: 60_000, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        // An exit code (a number), a signal (killed past the timeout), or a spawn error (a string code).
        const exit = error === null ? '0' : String(error.signal ?? error.code ?? 'spawn error');
        resolve({ exit, output: `${stdout}${stderr}`.trim() });
      },
    );
  });
}

async function gatherFacts(
  system: Awaited<ReturnType<typeof startSystem>>,
  prefix: string,
  userIds: string[],
): Promise<FinalFacts> {
  const sql = system.database.sql;
  const decisions: FinalFacts['decisions'] = {};
  for (const row of await sql<
    { event_id: string; approved: boolean; approved_cents: string; source: string; n: number }[]
  >`
      select event_id, bool_or(approved) as approved, max(approved_cents)::text as approved_cents, max(source) as source,
        count(*)::int as n
      from decisions group by event_id`) {
    decisions[row.event_id] = {
      approved: row.approved,
      approvedCents: row.approved_cents,
      source: row.source,
      count: row.n,
    };
  }
  const cardEventCounts: Record<string, number> = {};
  for (const row of await sql<
    { id: string; n: number }[]
  >`select id, count(*)::int as n from card_events group by id`)
    cardEventCounts[row.id] = row.n;
  const transferCounts: Record<string, number> = {};
  for (const row of await sql<
    { ref: string; n: number }[]
  >`select ref, count(*)::int as n from ledger_transfers group by ref`)
    transferCounts[row.ref] = row.n;
  const balances: FinalFacts['balances'] = {};
  for (const userId of userIds) {
    const [account] = await sql<{ holds_cents: string; unsettled_cents: string }[]>`
      select holds_cents::text, unsettled_cents::text from credit_accounts where user_id = ${userId}`;
    const [hold, unsettled] = await system.redis.hmget(
      userKeys(prefix, userId).account,
      ACCOUNT.holdsCents,
      ACCOUNT.unsettledCents,
    );
    balances[userId] = {
      pgHolds: account?.holds_cents ?? '0',
      pgUnsettled: account?.unsettled_cents ?? '0',
      redisHolds: hold ?? '0',
      redisUnsettled: unsettled ?? '0',
    };
  }
  const conservation = await conservationProblems(sql, system.redis, prefix, userIds);
  const authorizationHolds: NonNullable<FinalFacts['authorizationHolds']> = {};
  for (const userId of userIds) {
    for (const [id, held] of Object.entries(await system.redis.hgetall(userKeys(prefix, userId).holds)))
      authorizationHolds[id] = { redis: held, pg: '0' };
  }
  for (const row of await sql<{ id: string; held_cents: string }[]>`
      select id, held_cents::text from authorizations where held_cents <> 0`) {
    authorizationHolds[row.id] = { redis: authorizationHolds[row.id]?.redis ?? '0', pg: row.held_cents };
  }
  const authorizationOwners: NonNullable<FinalFacts['authorizationOwners']> = {};
  const ownersOf = (id: string) => {
    const owners = authorizationOwners[id] ?? { redis: [], pg: null };
    authorizationOwners[id] = owners;
    return owners;
  };
  for (const userId of userIds) {
    for (const id of await system.redis.hkeys(userKeys(prefix, userId).holds))
      ownersOf(id).redis.push(userId);
  }
  for (const row of await sql<{ id: string; user_id: string }[]>`select id, user_id from authorizations`)
    ownersOf(row.id).pg = row.user_id;
  const deadLetterSamples = (
    (await system.redis.xrange(deadLetterKey(prefix), '-', '+', 'COUNT', 5)) as [string, string[]][]
  ).map(([id, fields]) => `${id} ${fields.map((f) => f.slice(0, 600)).join(' | ')}`);
  const [unadopted] = await sql<
    { n: number }[]
  >`select count(*)::int as n from fallback_decisions where adopted_at is null`;
  return {
    decisions,
    cardEventCounts,
    transferCounts,
    balances,
    conservation,
    unadoptedFallbacks: unadopted?.n ?? 0,
    outboxLeft: await outboxBacklog(system.redis, prefix),
    deadLetters: await system.redis.xlen(deadLetterKey(prefix)),
    deadLetterSamples,
    authorizationHolds,
    authorizationOwners,
  };
}

/** The report of a seed's violations: the seed, the fault schedule and each one's smallest history. */
export function violationReport(result: SeedResult, history: ChaosHistory): string {
  const lines = [
    `seed ${result.seed}: ${result.violations.length} violation(s); replay with npm run chaos -- --seed=${result.seed} --duration=${result.durationS}`,
  ];
  lines.push('fault schedule:');
  for (const f of history.faults)
    lines.push(
      `  ${String(Math.round(f.startedMs ?? f.plannedAtMs)).padStart(7)} ms ${f.kind} ${f.target} ${f.detail} for ${f.durationMs} ms`,
    );
  for (const v of result.violations.slice(0, 10)) {
    lines.push(`VIOLATION ${v.kind}${v.userId === null ? '' : ` user ${v.userId}`}: ${v.message}`);
    for (const line of minimalHistory(history, v).slice(-60)) lines.push(`  ${line}`);
  }
  if (result.violations.length > 10) lines.push(`… and ${result.violations.length - 10} more`);
  lines.push(`full history: ${result.historyPath}`);
  return lines.join('\n');
}
