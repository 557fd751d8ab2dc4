/**
 * `npm run chaos -- --seed=N --duration=S` runs one seed and prints its violations (exit 1 if any);
 * `npm run chaos -- --seeds=K [--duration=S]` runs seeds 1..K, writes bench/chaos.json and the summary
 * table in README.md (between the chaos markers). Other flags: --hot-paths, --writers, --users,
 * --concurrency, --redis-url (a Redis to use instead of a private server), --redis-cluster (a private
 * 3-primary/3-replica Redis Cluster, the cluster fault kinds instead of the proxy ones), --postgres=direct
 * (the services reach Postgres without PgBouncer), --no-faults (the workload alone: a baseline), --first-seed.
 * --faults=<kind,kind> plays only those kinds (faults.ts lists them). --chain adds the chain (chain.ts): a
 * Hardhat node, the indexer and the settlement worker, deposits, withdrawal requests, on-chain price
 * moves and reorgs, and the chain faults (at most 16 users then). --no-runbook: after a
 * `redis_empty_restart`, do not play the operator's recovery (cache:warm, the window's events resent).
 * `npm run chaos -- --table` writes the README table again from bench/chaos.json.
 * `npm run chaos -- --check=<history.json>` runs the checker again over a history a run saved.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { checkHistory, minimalHistory } from './checker.ts';
import {
  CHAIN_FAULTS,
  CLOCK_FAULTS,
  CLUSTER_FAULTS,
  LIQUIDATOR_FAULTS,
  PROCESS_FAULTS,
  REDIS_EMPTY_RESTART,
  SERVER_FAULTS,
  WITHDRAWALS_FAULTS,
} from './faults.ts';
import type { ChaosHistory, FaultKind, FinalFacts } from './history.ts';
import { RUN_DEFAULTS, type RunOptions, runSeed, type SeedResult, violationReport } from './run.ts';
import { startPostgresSide, stopEverything } from './system.ts';

const REPO_ROOT = path.resolve(import.meta.dirname, '../..');

function parseArgs(argv: string[]): { seeds: number[]; options: RunOptions; writeReport: boolean } {
  const args = new Map<string, string>();
  for (const arg of argv) {
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (match === null) throw new Error(`unknown argument ${arg}`);
    args.set(match[1]!, match[2] ?? 'true');
  }
  const int = (name: string, fallback: number, min: number, max: number) => {
    const raw = args.get(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new Error(`--${name} must be an integer in [${min}, ${max}]`);
    return n;
  };
  const known = new Set([
    'seed',
    'seeds',
    'duration',
    'hot-paths',
    'writers',
    'users',
    'concurrency',
    'redis-url',
    'first-seed',
    'no-faults',
    'no-runbook',
    'postgres',
    'faults',
    'chain',
    'redis-cluster',
  ]);
  for (const name of args.keys()) if (!known.has(name)) throw new Error(`unknown flag --${name}`);
  const options: RunOptions = {
    ...RUN_DEFAULTS,
    durationS: int('duration', RUN_DEFAULTS.durationS, 5, 3_600),
    hotPaths: int('hot-paths', RUN_DEFAULTS.hotPaths, 1, 8),
    writers: int('writers', RUN_DEFAULTS.writers, 1, 8),
    users: int('users', RUN_DEFAULTS.users, 1, 200),
    concurrency: int('concurrency', RUN_DEFAULTS.concurrency, 1, 64),
    redisUrl: args.get('redis-url') ?? null,
    redisCluster: args.has('redis-cluster'),
    faults: !args.has('no-faults'),
    chain: args.has('chain'),
    runbook: !args.has('no-runbook'),
    postgresRoute: postgresRoute(args.get('postgres')),
    faultKinds: faultKinds(args.get('faults')),
    log: (line) => process.stdout.write(`${line}\n`),
  };
  if (args.has('seeds')) {
    const first = int('first-seed', 1, 0, 2 ** 31 - 1);
    const k = int('seeds', 1, 1, 10_000);
    return { seeds: Array.from({ length: k }, (_, i) => first + i), options, writeReport: true };
  }
  return { seeds: [int('seed', 1, 0, 2 ** 31 - 1)], options, writeReport: false };
}

function postgresRoute(raw: string | undefined): RunOptions['postgresRoute'] {
  if (raw === undefined || raw === 'pgbouncer') return 'pgbouncer';
  if (raw === 'direct') return 'direct';
  throw new Error('--postgres must be pgbouncer or direct');
}

/** `--faults=kill_hot_path,redis_stall`: only these kinds. */
function faultKinds(raw: string | undefined): FaultKind[] | null {
  if (raw === undefined) return null;
  const all: readonly string[] = [
    ...PROCESS_FAULTS,
    ...SERVER_FAULTS,
    REDIS_EMPTY_RESTART,
    ...CLUSTER_FAULTS,
    ...CHAIN_FAULTS,
    ...LIQUIDATOR_FAULTS,
    ...WITHDRAWALS_FAULTS,
    ...CLOCK_FAULTS,
  ];
  const kinds = raw.split(',').filter((k) => k !== '');
  for (const k of kinds)
    if (!all.includes(k)) throw new Error(`--faults: unknown kind ${k} (known: ${all.join(', ')})`);
  return kinds as FaultKind[];
}

type SeedSummary = Pick<
  SeedResult,
  | 'seed'
  | 'durationS'
  | 'faultsByKind'
  | 'requests'
  | 'approvals'
  | 'lifecycleEvents'
  | 'deliveries'
  | 'priceMoves'
> & { violations: { kind: string }[] };

function summaryTable(results: SeedSummary[]): string {
  const kinds = new Map<string, number>();
  for (const r of results)
    for (const [k, n] of Object.entries(r.faultsByKind)) kinds.set(k, (kinds.get(k) ?? 0) + n);
  const clean = results.filter((r) => r.violations.length === 0).length;
  const lines = [
    `${results.length} seeds of ${results[0]?.durationS ?? 0} s, ${clean} clean; ${results.reduce((n, r) => n + r.requests, 0)} authorization requests, ${results.reduce((n, r) => n + r.approvals, 0)} approvals, ${results.reduce((n, r) => n + r.lifecycleEvents, 0)} lifecycle events (${results.reduce((n, r) => n + r.deliveries, 0)} deliveries), ${results.reduce((n, r) => n + r.priceMoves, 0)} price moves.`,
    '',
    '| Fault | Injected | Seeds with a violation after it |',
    '| --- | --- | --- |',
  ];
  for (const [kind, n] of [...kinds].sort()) {
    const bad = results.filter((r) => (r.faultsByKind[kind] ?? 0) > 0 && r.violations.length > 0).length;
    lines.push(`| ${kind} | ${n} | ${bad} |`);
  }
  const byKind = new Map<string, number[]>();
  for (const r of results)
    for (const kind of new Set(r.violations.map((v) => v.kind)))
      byKind.set(kind, [...(byKind.get(kind) ?? []), r.seed]);
  if (byKind.size > 0) {
    lines.push('', '| Violation | Seeds |', '| --- | --- |');
    for (const [kind, seeds] of [...byKind].sort()) lines.push(`| ${kind} | ${seeds.join(', ')} |`);
  }
  return lines.join('\n');
}

function writeReadmeTable(table: string): void {
  const readme = path.join(REPO_ROOT, 'README.md');
  const text = readFileSync(readme, 'utf8');
  const begin = '<!-- chaos:begin -->';
  const end = '<!-- chaos:end -->';
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  if (i < 0 || j < i) {
    process.stdout.write('README.md has no chaos markers; the table is only printed\n');
    return;
  }
  writeFileSync(readme, `${text.slice(0, i + begin.length)}\n${table}\n${text.slice(j)}`);
}

/** With the chain: the withdrawals the workload finalized or tried to (chain-workload.ts `finalize`). */
function withdrawalSummary(history: ChaosHistory): string {
  const all = history.chain?.withdrawals ?? [];
  const count = (what: (w: (typeof all)[number]) => boolean) => all.filter(what).length;
  const refusals: Record<string, number> = {};
  for (const w of all) if (w.answer === 'refused') refusals[w.reason] = (refusals[w.reason] ?? 0) + 1;
  return `seed ${history.seed}: withdrawals: ${all.length} approvals asked, ${count((w) => w.answer === 'approved')} approved, ${count((w) => w.answer === 'refused')} refused ${JSON.stringify(refusals)}, ${count((w) => w.answer === 'error')} unanswered; finalize ${count((w) => w.finalize === 'mined')} mined, ${count((w) => w.finalize === 'reverted')} reverted`;
}

/** The operator's runbook the harness played after each Redis empty restart (run.ts, workload.ts). */
function runbookSummary(history: ChaosHistory): string[] {
  return (history.runbooks ?? []).map((r) => {
    const acked = r.eventIds.filter((id) =>
      history.lifecycle.some(
        (e) => e.eventId === id && e.deliveries.some((d) => d.resend === true && d.status === 200),
      ),
    ).length;
    const warm =
      r.cacheWarm === null
        ? 'not run'
        : `exit ${r.cacheWarm.exit} after ${r.cacheWarm.attempts ?? 1} attempt(s) (${r.cacheWarm.output.split('\n').at(-1) ?? ''})`;
    return `seed ${history.seed}: runbook after redis_empty_restart ${Math.round(r.faultStartedMs)}–${Math.round(r.faultEndedMs)} ms: writer lag 0 at ${r.lagZeroMs === null ? 'not seen' : `${Math.round(r.lagZeroMs)} ms`}; cache:warm ${warm}; resent ${r.eventIds.length} events acknowledged from ${Math.round(r.windowFromMs)} ms (${acked} acknowledged again) from ${Math.round(r.resendStartedMs ?? 0)} to ${r.endedMs === null ? '-' : Math.round(r.endedMs)} ms`;
  });
}

/** `--check=<file>`: the checker again over a history a run saved (e.g. after changing the checker). */
function recheck(file: string): void {
  const { history, facts } = JSON.parse(readFileSync(file, 'utf8')) as {
    history: ChaosHistory;
    facts: FinalFacts;
  };
  const violations = checkHistory(history, facts);
  if (history.chain?.withdrawals !== undefined) process.stdout.write(`${withdrawalSummary(history)}\n`);
  for (const line of runbookSummary(history)) process.stdout.write(`${line}\n`);
  for (const v of violations) {
    process.stdout.write(
      `VIOLATION ${v.kind}${v.userId === null ? '' : ` user ${v.userId}`}: ${v.message}\n`,
    );
    for (const line of minimalHistory(history, v).slice(-60)) process.stdout.write(`  ${line}\n`);
  }
  process.stdout.write(`seed ${history.seed}: ${violations.length} violations\n`);
  if (violations.length > 0) process.exitCode = 1;
}

async function main(): Promise<void> {
  const check = process.argv.slice(2).find((a) => a.startsWith('--check='));
  if (check !== undefined) return recheck(check.slice('--check='.length));
  if (process.argv.includes('--table')) {
    // The README table again from the last --seeds run's bench/chaos.json.
    const saved = JSON.parse(
      readFileSync(path.join(REPO_ROOT, 'bench', 'chaos.json'), 'utf8'),
    ) as SeedSummary[];
    const table = summaryTable(saved);
    process.stdout.write(`${table}\n`);
    return writeReadmeTable(table);
  }
  const { seeds, options, writeReport } = parseArgs(process.argv.slice(2));
  const postgres = await startPostgresSide();
  const results: SeedResult[] = [];
  try {
    for (const seed of seeds) {
      const result = await runSeed(postgres, seed, options);
      results.push(result);
      const { history } = JSON.parse(readFileSync(result.historyPath, 'utf8')) as { history: ChaosHistory };
      options.log(
        `seed ${seed}: ${result.requests} requests (${result.approvals} approved, ${result.requests - result.answered} unanswered), ${result.lifecycleEvents} events, faults ${JSON.stringify(result.faultsByKind)}, ${result.violations.length} violations, ${Math.round(result.elapsedMs / 1000)} s`,
      );
      if (history.chain?.withdrawals !== undefined) options.log(withdrawalSummary(history));
      for (const line of runbookSummary(history)) options.log(line);
      if (result.violations.length > 0) options.log(violationReport(result, history));
    }
  } finally {
    await postgres.destroy();
  }
  if (writeReport) {
    const file = path.join(REPO_ROOT, 'bench', 'chaos.json');
    writeFileSync(
      file,
      `${JSON.stringify(
        results.map((r) => ({
          seed: r.seed,
          durationS: r.durationS,
          faultsByKind: r.faultsByKind,
          requests: r.requests,
          approvals: r.approvals,
          reasons: r.reasons,
          lifecycleEvents: r.lifecycleEvents,
          deliveries: r.deliveries,
          priceMoves: r.priceMoves,
          processRestarts: r.processRestarts,
          violations: r.violations.map((v) => ({ kind: v.kind, message: v.message })),
        })),
        null,
        2,
      )}\n`,
    );
    const table = summaryTable(results);
    process.stdout.write(`${table}\n`);
    writeReadmeTable(table);
  }
  if (results.some((r) => r.violations.length > 0)) process.exitCode = 1;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stdout.write(`${signal}: stopping the chaos run's servers and processes\n`);
    void stopEverything().finally(() => process.exit(130));
  });
}

await main();
