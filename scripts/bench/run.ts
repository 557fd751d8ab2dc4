/**
 * `npm run bench`: one run, one machine, side by side —
 *  1. ceiling: a bare Hono endpoint parsing the same JSON body;
 *  2. the hot path: signed `issuing_authorization.request` events spread over 10,000 users;
 *  3. latency at a fixed offered rate of 1,000 requests/s, open loop (open-loop.ts: each request is due
 *     at its time whatever the others do, latency counted from then);
 *  4. the obvious alternative: the same decisions from Postgres alone (row-locked check-and-hold);
 *  5. Redis round trips per decision (the hot path's own counter) and the ledger writer's lag.
 * Servers run as child processes; autocannon runs here. Prints a table and writes bench/results.json.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import autocannon from 'autocannon';
import postgres from 'postgres';
import { waitForEmptyOutbox } from '../../hot-path/ledger-writer/testing.ts';
import { configFromProcess } from '../../shared/config.ts';
import { ensureDatabase, migrateDatabase } from '../../shared/db/migrate.ts';
import { publishPrice } from '../../shared/redis/account.ts';
import { createServiceRedis, deletePrefix, primaries } from '../../shared/redis/client.ts';
import { publishAsset } from '../../shared/redis/market.ts';
import { authorizationRequest, signPayload } from '../../shared/stripe/issuing-events.ts';
import { openLoop } from './open-loop.ts';
import { cpuSpent, processCpuMs, processesCpuMs } from './proc-cpu.ts';

const USERS = 10_000;
const args = process.argv.slice(2);
const MEASURE_S = Number(args.find((a) => /^\d+$/.test(a)) ?? 10);
/** `--profile`: each server writes a CPU profile to bench/profiles when it stops. */
const PROFILE = args.includes('--profile');
/**
 * `--hot-only`: only the hot path at full speed, without the ledger writer, and no results file — for
 * looking into the hot path itself (with `--profile`).
 */
const HOT_ONLY = args.includes('--hot-only');
const FIXED_RATE = 1_000;
const SECRET = 'whsec_bench_secret_not_for_production_0001';
const PREFIX = 'bench:';
// A local tool: NODE_ENV=development unless set (shared/config.ts, ConfigFromProcessOptions).
const config = configFromProcess({}, { localTool: true });
const benchUrl = new URL(config.DATABASE_URL);
benchUrl.pathname = '/credana_bench';
const databaseUrl = benchUrl.toString();

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function prepare(): Promise<void> {
  const admin = postgres(config.DATABASE_URL.replace(/\/[^/]*$/, '/postgres'), {
    max: 1,
    onnotice: () => {},
  });
  await admin.unsafe('drop database if exists credana_bench with (force)');
  await admin.end();
  await ensureDatabase(databaseUrl);
  await migrateDatabase(databaseUrl);
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
  const redis = createServiceRedis(config);
  await deletePrefix(redis, PREFIX);
  const nowS = Math.floor(Date.now() / 1000);
  const weth = {
    assetId: 'WETH',
    tokenDecimals: 18,
    priceDecimals: 8,
    ltvBps: 8000n,
    liquidationThresholdBps: 8250n,
    priceAgeMaxS: 86_400,
  };
  await sql`insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
    liquidation_threshold_bps, price_age_max_s) values ('WETH', 31337, '0x0000000000000000000000000000000000000001', 18,
    '0x0000000000000000000000000000000000000002', 8, 8000, 8250, 86400)`;
  await publishAsset(redis, PREFIX, weth);
  await publishPrice(redis, PREFIX, {
    assetId: 'WETH',
    answer: 300_000_000_000n,
    updatedAtS: nowS,
    roundId: 1n,
  });
  // 10,000 users with 1,000 WETH each and limits high enough that every swipe is a real approval. Their
  // ids are RFC 4122 version-4 UUIDs made from md5('bench' || i): the outbox record's schema (zod's
  // uuid) refuses other version and variant bits, and until 2026-12-07 the plain md5 ids made the ledger
  // writer dead-letter nearly every bench decision as invalid instead of writing it.
  const userId = sql.unsafe(
    "overlay(overlay(md5('bench' || i) placing '4' from 13 for 1) placing '8' from 17 for 1)::uuid",
  );
  await sql`insert into users (id, credit_limit_cents, daily_limit_cents)
    select ${userId}, 100000000000, 100000000000 from generate_series(1, ${USERS}) i`;
  await sql`insert into credit_accounts (user_id) select ${userId} from generate_series(1, ${USERS}) i`;
  await sql`insert into cards (id, user_id) select 'ic_bench_' || i, ${userId} from generate_series(1, ${USERS}) i`;
  await sql`insert into positions (user_id, asset_id, collateral_base)
    select ${userId}, 'WETH', 1000000000000000000000 from generate_series(1, ${USERS}) i`;
  await sql.end();
  redis.disconnect();
}

const redisPid = await (async () => {
  const probe = createServiceRedis(config);
  try {
    // One Redis's process (on a cluster: the first primary's; the CPU figures then cover that node).
    const [node] = await primaries(probe);
    const info = (await node?.info('server')) ?? '';
    const pid = /process_id:(\d+)/.exec(info)?.[1];
    return pid === undefined ? undefined : Number(pid);
  } finally {
    probe.disconnect();
  }
})();

/** CPU used so far by each part: the server under test, Redis, Postgres, this process (autocannon). */
function cpuNow(server: Server, writer?: Server) {
  const own = process.cpuUsage();
  return {
    server: processCpuMs(server.child.pid),
    writer: writer === undefined ? null : processCpuMs(writer.child.pid),
    redis: processCpuMs(redisPid),
    postgres: processesCpuMs('postgres'),
    loadGenerator: (own.user + own.system) / 1000,
  };
}

/** CPU per request (µs) of each part over a run of `requests`. */
function cpuPerRequestUs(spent: Record<string, number | null>, requests: number) {
  const out: Record<string, number | null> = {};
  for (const [key, ms] of Object.entries(spent))
    out[key] = ms === null || requests === 0 ? null : Math.round((ms * 1000) / requests);
  return out;
}

interface Server {
  child: ChildProcess;
  stop(): Promise<void>;
}

async function startServer(
  entry: string,
  port: number,
  ready: string,
  extra: Record<string, string> = {},
): Promise<Server> {
  const profile = PROFILE ? ['--cpu-prof', '--cpu-prof-dir=bench/profiles'] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', entry], {
    env: {
      PATH: process.env['PATH'] ?? '',
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: databaseUrl,
      REDIS_URL: config.REDIS_URL,
      REDIS_CLUSTER_NODES: config.REDIS_CLUSTER_NODES.join(','),
      REDIS_KEY_PREFIX: PREFIX,
      STRIPE_WEBHOOK_SECRETS: SECRET,
      HOT_PATH_PORT: String(port),
      // The hot path's public port serves /metrics only to this bearer (scrape() below).
      METRICS_TOKEN,
      VELOCITY_LIMIT_PER_MIN: '10000',
      DATABASE_POOL_MAX: '20',
      ...extra,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  child.stderr?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  const until = Date.now() + 60_000;
  while (!out.includes(ready)) {
    if (child.exitCode !== null || Date.now() > until)
      throw new Error(`${entry} did not start: ${out.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/** Opens /metrics on the hot path's public port for this run (the ledger writer's port is internal). */
const METRICS_TOKEN = `bench_${randomBytes(16).toString('hex')}`;

let sequence = 0;
/** A distinct `issuing_authorization.request` in Stripe's wire format (shared builder), signed. */
function signedRequest(): { body: string; headers: Record<string, string> } {
  sequence++;
  const body = JSON.stringify(
    authorizationRequest({
      cardId: `ic_bench_${(sequence % USERS) + 1}`,
      amountCents: 1_250,
      eventId: `evt_bench_${process.pid}_${sequence}`,
      authorizationId: `iauth_bench_${process.pid}_${sequence}`,
    }),
  );
  return {
    body,
    headers: { 'content-type': 'application/json', 'stripe-signature': signPayload(body, SECRET) },
  };
}

/**
 * Signed bodies are made before a run (each distinct: a replay would be answered from the idempotency
 * key and flatter the figures), so the load generator spends its CPU on sending, not on HMACs.
 */
function pregenerate(count: number): { body: string; headers: Record<string, string> }[] {
  return Array.from({ length: count }, () => signedRequest());
}

async function load(port: number, seconds: number, options: { amount?: number; expectedRps?: number } = {}) {
  const pool = pregenerate(options.amount ?? Math.ceil(seconds * (options.expectedRps ?? 20_000) * 1.2));
  let next = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: 64,
    ...(options.amount === undefined ? { duration: seconds } : { amount: options.amount }),
    requests: [
      {
        method: 'POST',
        path: '/stripe/authorizations',
        setupRequest: (request) => {
          const signed = pool[next++ % pool.length] ?? signedRequest();
          return { ...request, body: signed.body, headers: signed.headers };
        },
      },
    ],
  });
  if (result.non2xx > 0 || result.errors > 0)
    throw new Error(`load run had ${result.non2xx} non-2xx and ${result.errors} errors`);
  return result;
}

/** The fixed-rate phase: an open loop (open-loop.ts), every body distinct and signed beforehand. */
async function fixedRate(port: number, seconds: number, ratePerS: number) {
  const pool = pregenerate(Math.ceil(seconds * ratePerS));
  let next = 0;
  const result = await openLoop({
    url: `http://127.0.0.1:${port}`,
    ratePerS,
    seconds,
    connectionsMax: 64,
    next: () => {
      const signed = pool[next++]!;
      return { method: 'POST', path: '/stripe/authorizations', body: signed.body, headers: signed.headers };
    },
  });
  if (result.non2xx > 0 || result.errors > 0)
    throw new Error(`fixed-rate run had ${result.non2xx} non-2xx and ${result.errors} errors`);
  return result;
}

async function scrape(port: number): Promise<Map<string, number>> {
  const headers = { authorization: `Bearer ${METRICS_TOKEN}` };
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { headers })).text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (match?.[1] === undefined || match[3] === undefined) continue;
    const key = match[1] + (match[2] ?? '');
    values.set(key, Number(match[3]));
  }
  return values;
}

/**
 * The share of decisions the hot path itself timed at or under `le` seconds (its latency histogram)
 * between two scrapes: the server's side of the latency, without the load generator's.
 */
function shareWithin(before: Map<string, number>, after: Map<string, number>, le: string): number {
  const bucket = (values: Map<string, number>, bound: string) =>
    values.get(`credana_decision_latency_seconds_bucket{le="${bound}",source="redis"}`) ?? 0;
  const total = bucket(after, '+Inf') - bucket(before, '+Inf');
  return total === 0 ? 0 : Math.round(((bucket(after, le) - bucket(before, le)) / total) * 10_000) / 10_000;
}

function sumOf(values: Map<string, number>, name: string): number {
  let total = 0;
  for (const [key, value] of values) if (key === name || key.startsWith(`${name}{`)) total += value;
  return total;
}

log(`bench: preparing ${USERS} users in credana_bench (prefix ${PREFIX})`);
await prepare();
const port = 18_787;

if (HOT_ONLY) {
  const hot = await startServer('hot-path/main.ts', port, 'hot-path ready');
  await load(port, 0, { amount: USERS });
  const cpuBefore = cpuNow(hot);
  const rate = args.find((a) => a.startsWith('--rate='))?.slice('--rate='.length);
  if (rate !== undefined) {
    const before = await scrape(port);
    const fixed = await fixedRate(port, MEASURE_S, Number(rate));
    const within10Ms = shareWithin(before, await scrape(port), '0.01');
    await hot.stop();
    log(`server side: ${within10Ms} of decisions within 10 ms`);
    log(`hot path alone at ${rate} req/s (open loop): ${JSON.stringify(fixed)}`);
    process.exit(0);
  }
  const run = await load(port, MEASURE_S);
  const cpu = cpuPerRequestUs(cpuSpent(cpuBefore, cpuNow(hot)), run.requests.total);
  await hot.stop();
  log(
    `hot path alone: ${Math.round(run.requests.average)} req/s, p50 ${run.latency.p50} ms, p99 ${run.latency.p99} ms; CPU µs per request ${JSON.stringify(cpu)}`,
  );
  process.exit(0);
}

log('bench: 1/4 ceiling (bare Hono, same body)');
const ceilingServer = await startServer('scripts/bench/ceiling-server.ts', port, 'ceiling ready');
await load(port, 2);
const ceilingCpuBefore = cpuNow(ceilingServer);
const ceiling = await load(port, MEASURE_S);
const ceilingCpu = cpuPerRequestUs(cpuSpent(ceilingCpuBefore, cpuNow(ceilingServer)), ceiling.requests.total);
await ceilingServer.stop();

log('bench: 2/4 hot path: warm-up (one decision per user), the ledger writer draining alongside');
const writerPort = port + 1;
// The whole write side runs as in production: the ledger writer drains the outbox while the hot path
// answers, and its lag (age of the oldest unwritten entry) is sampled throughout.
const writer = await startServer('hot-path/ledger-writer/main.ts', writerPort, 'ledger-writer ready', {
  LEDGER_WRITER_PORT: String(writerPort),
});
let ledgerLagMsMax = 0;
let sampleLag = true;
const lagSampler = setInterval(() => {
  if (!sampleLag) return;
  scrape(writerPort).then(
    (values) => {
      if (sampleLag) ledgerLagMsMax = Math.max(ledgerLagMsMax, sumOf(values, 'credana_ledger_lag_ms'));
    },
    () => {},
  );
}, 200);
/**
 * Waits until the writer has written everything — every outbox stream empty (the writer deletes what
 * it has committed) — and returns the ms it took. Read from Redis, not the writer's backlog gauge, which
 * is stale right after the writer was paused.
 */
const outbox = createServiceRedis(config);
const drained = () => waitForEmptyOutbox(outbox, PREFIX, 300_000, 100);
const hot = await startServer('hot-path/main.ts', port, 'hot-path ready');
await load(port, 0, { amount: USERS });
await drained();
ledgerLagMsMax = 0;

log(`bench: 3/4 hot path at a fixed ${FIXED_RATE} requests/s (open loop), the writer keeping up alongside`);
const fixedBefore = await scrape(port);
const fixed = await fixedRate(port, MEASURE_S, FIXED_RATE);
const fixedServerShareWithin10Ms = shareWithin(fixedBefore, await scrape(port), '0.01');
await drained();

log('bench: 3/4 hot path at full speed, the writer draining alongside');
const before = await scrape(port);
const hotCpuBefore = cpuNow(hot, writer);
const hotRun = await load(port, MEASURE_S);
const hotCpu = cpuPerRequestUs(cpuSpent(hotCpuBefore, cpuNow(hot, writer)), hotRun.requests.total);
const after = await scrape(port);
const ledgerCatchUpMs = await drained();
// A bench whose writer dead-letters measures dead-lettering, not writing: refuse to report it.
const deadLettered = sumOf(await scrape(writerPort), 'credana_ledger_dead_lettered_total');
if (deadLettered > 0) throw new Error(`bench: the ledger writer dead-lettered ${deadLettered} entries`);

// The same with the writer paused (SIGSTOP), as when the writer and Postgres have machines of their
// own: what the hot path does with these 2 cores to itself, Redis and the load generator. The backlog
// it leaves is then written, and how long that takes is reported.
log('bench: 3/4 hot path at full speed, the writer paused (then catching up)');
sampleLag = false;
writer.child.kill('SIGSTOP');
const pausedCpuBefore = cpuNow(hot);
const pausedRun = await load(port, MEASURE_S);
const pausedCpu = cpuPerRequestUs(cpuSpent(pausedCpuBefore, cpuNow(hot)), pausedRun.requests.total);
writer.child.kill('SIGCONT');
const pausedBacklogDrainMs = await drained();
await hot.stop();
clearInterval(lagSampler);
await writer.stop();
outbox.disconnect();
const decisions = sumOf(after, 'credana_decisions_total') - sumOf(before, 'credana_decisions_total');
const trips =
  sumOf(after, 'credana_decision_redis_round_trips_total') -
  sumOf(before, 'credana_decision_redis_round_trips_total');
const fallbacks =
  sumOf(after, 'credana_decision_fallbacks_total') - sumOf(before, 'credana_decision_fallbacks_total');

log('bench: 4/4 Postgres only (row-locked check-and-hold)');
const pgServer = await startServer('scripts/bench/postgres-only-server.ts', port, 'postgres-only ready');
await load(port, 2);
const pgCpuBefore = cpuNow(pgServer);
const pgRun = await load(port, MEASURE_S);
const pgCpu = cpuPerRequestUs(cpuSpent(pgCpuBefore, cpuNow(pgServer)), pgRun.requests.total);
await pgServer.stop();

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const results = {
  cpuCount: cpus().length,
  nodeVersion: process.version,
  measureSeconds: MEASURE_S,
  users: USERS,
  ceilingRps: round(ceiling.requests.average, 0),
  hotPathRps: round(hotRun.requests.average, 0),
  ratioToCeiling: round(hotRun.requests.average / ceiling.requests.average),
  hotPathRpsWriterPaused: round(pausedRun.requests.average, 0),
  ratioToCeilingWriterPaused: round(pausedRun.requests.average / ceiling.requests.average),
  p50Ms: fixed.p50Ms,
  p99Ms: fixed.p99Ms,
  p999Ms: fixed.p999Ms,
  fixedRateRps: FIXED_RATE,
  fixedRateAchievedRps: fixed.achievedPerS,
  fixedRateMaxMs: fixed.maxMs,
  // At the fixed rate, the share of decisions the hot path itself timed within 10 ms (body read to answer).
  fixedRateServerShareWithin10Ms: fixedServerShareWithin10Ms,
  postgresOnlyRps: round(pgRun.requests.average, 0),
  ratioToPostgresOnly: round(hotRun.requests.average / pgRun.requests.average),
  redisRoundTripsPerDecision: decisions > 0 ? round(trips / decisions, 3) : -1,
  hotPathFallbacks: fallbacks,
  ledgerLagMsMax: Math.round(ledgerLagMsMax),
  ledgerCatchUpMsAfterFullSpeed: ledgerCatchUpMs,
  ledgerDrainMsAfterPausedRun: pausedBacklogDrainMs,
  // Where each run's CPU went, per request (µs; from /proc): explains the ratios on a shared machine.
  cpuUsPerRequest: {
    ceiling: ceilingCpu,
    hotPath: hotCpu,
    hotPathWriterPaused: pausedCpu,
    postgresOnly: pgCpu,
  },
};
mkdirSync('bench', { recursive: true });
writeFileSync('bench/results.json', `${JSON.stringify(results, null, 2)}\n`);
log('');
log(
  `| measure | value | (${results.cpuCount} CPUs, Node ${results.nodeVersion}, ${MEASURE_S} s runs, 64 connections)`,
);
log('| --- | --- |');
log(`| ceiling (bare Hono) | ${results.ceilingRps} req/s |`);
log(
  `| hot path, 10,000 users, ledger writer draining alongside | ${results.hotPathRps} req/s (${results.ratioToCeiling} × ceiling) |`,
);
log(
  `| hot path, writer paused | ${results.hotPathRpsWriterPaused} req/s (${results.ratioToCeilingWriterPaused} × ceiling; backlog written in ${results.ledgerDrainMsAfterPausedRun} ms after) |`,
);
log(
  `| latency at ${FIXED_RATE} req/s, open loop | p50 ${results.p50Ms} ms, p99 ${results.p99Ms} ms, p99.9 ${results.p999Ms} ms |`,
);
log(`| Postgres only | ${results.postgresOnlyRps} req/s (hot path ${results.ratioToPostgresOnly} ×) |`);
log(`| Redis round trips per decision | ${results.redisRoundTripsPerDecision} |`);
log(
  `| ledger writer lag (max) | ${results.ledgerLagMsMax} ms (fixed-rate and full-speed phases; caught up ${results.ledgerCatchUpMsAfterFullSpeed} ms after) |`,
);
log(`| CPU µs per request | ${JSON.stringify(results.cpuUsPerRequest)} |`);
log('bench: wrote bench/results.json');
process.exit(0);
