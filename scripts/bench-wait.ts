/**
 * `npm run bench:wait [seconds]`: what REDIS_WAIT_REPLICAS costs, side by side in one run.
 *
 * A private Redis primary with one replica (`--replicaof`), both with the production persistence
 * (AOF, `appendfsync always`), and two hot-path processes on the primary: one with
 * REDIS_WAIT_REPLICAS=0 (no WAIT), one with REDIS_WAIT_REPLICAS=1 (WAIT pipelined with the decision).
 * autocannon (32 connections, distinct signed `issuing_authorization.request`s over 1,000 users) runs
 * against each in alternating rounds; then a last round on the WAIT process with the replica stopped
 * (SIGSTOP): every approval is declined `replication_unconfirmed` after REDIS_WAIT_TIMEOUT_MS.
 * Prints decisions/s and p50/p99 per variant with the load average, and writes bench/wait.json.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import postgres from 'postgres';
import { configFromProcess } from '../shared/config.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { publishPrice } from '../shared/redis/account.ts';
import { createRedis } from '../shared/redis/client.ts';
import { publishAsset } from '../shared/redis/market.ts';
import { freePort } from '../test/support/processes.ts';
import { authorizationRequest, signPayload } from '../test/support/stripe-issuing-events.ts';

const USERS = 1_000;
const ROUNDS = 3;
const SECONDS = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 8);
const WAIT_TIMEOUT_MS = 50;
const SECRET = 'whsec_bench_secret_not_for_production_0001';
const PREFIX = 'benchwait:';
const config = configFromProcess({}, { localTool: true });
const dbUrl = new URL(config.DATABASE_URL);
dbUrl.pathname = '/credana_bench_wait';
const databaseUrl = dbUrl.toString();

const children = new Set<ChildProcess>();
const dirs: string[] = [];
function cleanUp(): void {
  for (const child of children) {
    try {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    } catch {}
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanUp);
process.on('SIGINT', () => process.exit(130));

const log = (line: string) => process.stdout.write(`${line}\n`);
const load1 = () => Math.round((loadavg()[0] ?? 0) * 100) / 100;

async function redisServer(extra: string[]): Promise<{ port: number; pid: number }> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'credana-bench-wait-'));
  dirs.push(dir);
  const child = spawn(
    'redis-server',
    [
      ...['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir],
      ...['--appendonly', 'yes', '--appendfsync', 'always'],
      ...extra,
    ],
    { stdio: 'ignore' },
  );
  children.add(child);
  const probe = createRedis({ url: `redis://127.0.0.1:${port}` });
  for (let i = 0; probe.status !== 'ready'; i++) {
    if (i > 200) throw new Error('bench:wait: redis-server did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  probe.disconnect();
  return { port, pid: child.pid ?? 0 };
}

async function prepare(redisUrl: string): Promise<void> {
  const admin = postgres(config.DATABASE_URL.replace(/\/[^/]*$/, '/postgres'), {
    max: 1,
    onnotice: () => {},
  });
  await admin.unsafe('drop database if exists credana_bench_wait with (force)');
  await admin.end();
  await ensureDatabase(databaseUrl);
  await migrateDatabase(databaseUrl);
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
  const redis = createRedis({ url: redisUrl });
  const nowS = Math.floor(Date.now() / 1000);
  await sql`insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
    liquidation_threshold_bps, price_age_max_s) values ('WETH', 31337, '0x0000000000000000000000000000000000000001', 18,
    '0x0000000000000000000000000000000000000002', 8, 8000, 8250, 86400)`;
  await publishAsset(redis, PREFIX, {
    assetId: 'WETH',
    tokenDecimals: 18,
    priceDecimals: 8,
    ltvBps: 8000n,
    liquidationThresholdBps: 8250n,
    priceAgeMaxS: 86_400,
  });
  await publishPrice(redis, PREFIX, {
    assetId: 'WETH',
    answer: 300_000_000_000n,
    updatedAtS: nowS,
    roundId: 1n,
  });
  // Version-4 UUIDs from md5, as in scripts/bench/run.ts (the outbox schema checks the bits).
  const userId = sql.unsafe(
    "overlay(overlay(md5('benchwait' || i) placing '4' from 13 for 1) placing '8' from 17 for 1)::uuid",
  );
  await sql`insert into users (id, credit_limit_cents, daily_limit_cents)
    select ${userId}, 100000000000, 100000000000 from generate_series(1, ${USERS}) i`;
  await sql`insert into credit_accounts (user_id) select ${userId} from generate_series(1, ${USERS}) i`;
  await sql`insert into cards (id, user_id) select 'ic_bw_' || i, ${userId} from generate_series(1, ${USERS}) i`;
  await sql`insert into positions (user_id, asset_id, collateral_base)
    select ${userId}, 'WETH', 1000000000000000000000 from generate_series(1, ${USERS}) i`;
  await sql.end();
  redis.disconnect();
}

const METRICS_TOKEN = `bench_${Date.now().toString(36)}_metrics_token_0001`;

async function hotPath(redisUrl: string, waitReplicas: number): Promise<{ port: number }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'hot-path/main.ts'], {
    env: {
      PATH: process.env['PATH'] ?? '',
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: PREFIX,
      STRIPE_WEBHOOK_SECRETS: SECRET,
      HOT_PATH_PORT: String(port),
      HOT_PATH_METRICS_PORT: '0',
      METRICS_TOKEN,
      VELOCITY_LIMIT_PER_MIN: '10000',
      REDIS_WAIT_REPLICAS: String(waitReplicas),
      REDIS_WAIT_TIMEOUT_MS: String(WAIT_TIMEOUT_MS),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  child.stderr?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  const until = Date.now() + 180_000;
  while (!out.includes('hot-path ready')) {
    if (child.exitCode !== null || Date.now() > until)
      throw new Error(`hot path did not start: ${out.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port };
}

let sequence = 0;
function signed() {
  sequence++;
  const body = JSON.stringify(
    authorizationRequest({
      cardId: `ic_bw_${(sequence % USERS) + 1}`,
      amountCents: 1_250,
      eventId: `evt_bw_${process.pid}_${sequence}`,
      authorizationId: `iauth_bw_${process.pid}_${sequence}`,
    }),
  );
  return {
    body,
    headers: { 'content-type': 'application/json', 'stripe-signature': signPayload(body, SECRET) },
  };
}

async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (
    await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
  ).text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m?.[1] !== undefined && m[3] !== undefined) values.set(m[1] + (m[2] ?? ''), Number(m[3]));
  }
  return values;
}

function sumOf(values: Map<string, number>, name: string, labelPart = ''): number {
  let total = 0;
  for (const [key, value] of values)
    if ((key === name || key.startsWith(`${name}{`)) && key.includes(labelPart)) total += value;
  return total;
}

interface Round {
  variant: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  approved: number;
  withdrawn: number;
  decisions: number;
  /** Decisions not made from Redis (Postgres fallback or declined without a decision). */
  fallbacks: number;
  roundTripsPerDecision: number;
  /** WAIT commands Redis ran per approval (INFO commandstats): below 1 when approvals share one. */
  waitsPerApproval: number;
  load1m: number;
}

async function waitCalls(): Promise<number> {
  const probe = createRedis({ url: primaryUrl });
  try {
    return Number(/cmdstat_wait:calls=(\d+)/.exec(await probe.info('commandstats'))?.[1] ?? '0');
  } finally {
    probe.disconnect();
  }
}

async function round(variant: string, port: number, seconds: number): Promise<Round> {
  const before = await scrape(port);
  const waitsBefore = await waitCalls();
  const pool = Array.from({ length: Math.ceil(seconds * 6_000) }, signed);
  let next = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: 32,
    duration: seconds,
    requests: [
      {
        method: 'POST',
        path: '/stripe/authorizations',
        setupRequest: (request) => {
          const s = pool[next++ % pool.length] ?? signed();
          return { ...request, body: s.body, headers: s.headers };
        },
      },
    ],
  });
  if (result.non2xx > 0 || result.errors > 0)
    throw new Error(`bench:wait: ${result.non2xx} non-2xx and ${result.errors} errors`);
  const after = await scrape(port);
  const delta = (name: string, label = '') => sumOf(after, name, label) - sumOf(before, name, label);
  const decisions = delta('credana_decisions_total');
  const waits = (await waitCalls()) - waitsBefore;
  const approvedCount = delta('credana_decisions_total', 'outcome="approved"');
  return {
    variant,
    rps: Math.round(result.requests.average),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    approved: approvedCount,
    withdrawn: delta('credana_decisions_total', 'reason="replication_unconfirmed"'),
    decisions,
    fallbacks: delta('credana_decision_fallbacks_total'),
    roundTripsPerDecision:
      Math.round((delta('credana_decision_redis_round_trips_total') / decisions) * 100) / 100,
    waitsPerApproval: approvedCount > 0 ? Math.round((waits / approvedCount) * 1000) / 1000 : 0,
    load1m: load1(),
  };
}

const loadStart = load1();
const primary = await redisServer([]);
const replica = await redisServer(['--replicaof', '127.0.0.1', String(primary.port)]);
const primaryUrl = `redis://127.0.0.1:${primary.port}`;
{
  const probe = createRedis({ url: primaryUrl });
  for (let i = 0; !/slave0:.*state=online/.test(await probe.info('replication')); i++) {
    if (i > 400) throw new Error('bench:wait: the replica did not come online');
    await new Promise((r) => setTimeout(r, 50));
  }
  probe.disconnect();
}
await prepare(primaryUrl);
const off = await hotPath(primaryUrl, 0);
const on = await hotPath(primaryUrl, 1);
// Warm: every account built in the cache (and each process's snapshot of it) before measuring.
await round('warm-off', off.port, 2);
await round('warm-on', on.port, 2);
const rounds: Round[] = [];
for (let i = 0; i < ROUNDS; i++) {
  rounds.push(await round('WAIT off (REDIS_WAIT_REPLICAS=0)', off.port, SECONDS));
  rounds.push(await round('WAIT 1 (REDIS_WAIT_REPLICAS=1)', on.port, SECONDS));
}
process.kill(replica.pid, 'SIGSTOP');
const stalled = await round(
  `WAIT 1, replica stopped (SIGSTOP), timeout ${WAIT_TIMEOUT_MS} ms`,
  on.port,
  SECONDS,
);
process.kill(replica.pid, 'SIGCONT');

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const summary = ['WAIT off (REDIS_WAIT_REPLICAS=0)', 'WAIT 1 (REDIS_WAIT_REPLICAS=1)'].map((variant) => {
  const rs = rounds.filter((r) => r.variant === variant);
  return {
    variant,
    rounds: rs.length,
    rpsMedian: median(rs.map((r) => r.rps)),
    p50MsMedian: median(rs.map((r) => r.p50Ms)),
    p99MsMedian: median(rs.map((r) => r.p99Ms)),
    withdrawn: rs.reduce((s, r) => s + r.withdrawn, 0),
    roundTripsPerDecision: median(rs.map((r) => r.roundTripsPerDecision)),
    waitsPerApproval: median(rs.map((r) => r.waitsPerApproval)),
  };
});
const [base, wait] = summary;
const loadEnd = load1();
log('');
log(
  `bench:wait — ${ROUNDS} alternating rounds of ${SECONDS} s, 32 connections, AOF always on primary and replica`,
);
log(
  `load average (1 min): ${loadStart} at start, ${loadEnd} at end — a shared 2-core machine; compare only side by side`,
);
log(
  '| variant | decisions/s | p50 ms | p99 ms | approvals withdrawn | not from Redis (fallback) | Redis round trips / decision | WAITs / approval |',
);
log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const s of summary) {
  const fallbacks = rounds.filter((r) => r.variant === s.variant).reduce((n, r) => n + r.fallbacks, 0);
  log(
    `| ${s.variant} (median of ${s.rounds}) | ${s.rpsMedian} | ${s.p50MsMedian} | ${s.p99MsMedian} | ${s.withdrawn} | ${fallbacks} | ${s.roundTripsPerDecision} | ${s.waitsPerApproval} |`,
  );
}
log(
  `| ${stalled.variant} | ${stalled.rps} | ${stalled.p50Ms} | ${stalled.p99Ms} | ${stalled.withdrawn} of ${stalled.decisions} | ${stalled.fallbacks} | ${stalled.roundTripsPerDecision} | - |`,
);
if (base !== undefined && wait !== undefined && base.rpsMedian > 0)
  log(
    `WAIT 1 / WAIT off: throughput ×${(wait.rpsMedian / base.rpsMedian).toFixed(2)}, p50 ×${(wait.p50MsMedian / Math.max(base.p50MsMedian, 0.01)).toFixed(2)}, p99 ×${(wait.p99MsMedian / Math.max(base.p99MsMedian, 0.01)).toFixed(2)}`,
  );
log('every round:');
for (const r of rounds) log(`  ${JSON.stringify(r)}`);
writeFileSync(
  'bench/wait.json',
  `${JSON.stringify({ at: new Date().toISOString(), secondsPerRound: SECONDS, loadAverage1m: [loadStart, loadEnd], summary, stalled, rounds }, null, 2)}\n`,
);
cleanUp();
process.exit(0);
