/**
 * `npm run bench`: one run, one machine, side by side —
 *  1. ceiling: a bare Hono endpoint parsing the same JSON body;
 *  2. the tail: latency at a fixed offered rate of 1,000 requests/s, open loop (open-loop.ts: each
 *     request is due at its time whatever the others do, latency counted from then), the ledger writer
 *     draining alongside, before and after the tail fixes in alternating rounds, each slow answer laid
 *     over what the hot path, the writer and the load generator were doing (tail.ts, tail-probe.ts);
 *  3. the hot path: signed `issuing_authorization.request` events spread over 10,000 users, the writer
 *     draining alongside, then paused;
 *  4. the architecture floor (floor-server.ts: same signature check and parse, one EVALSHA that reserves
 *     and appends), in alternating rounds with the hot path, writer paused: the hot path's ratio to it;
 *  5. the obvious alternative: the same decisions from Postgres alone (row-locked check-and-hold);
 *  6. Redis round trips per decision (the hot path's own counter) and the ledger writer's lag;
 *  7. the hot path on a private 3-primary Redis Cluster beside a private single Redis with the same
 *     persistence, in alternating rounds: decisions/s, latency at a fixed rate, the WAIT cost on the
 *     cluster, and with `--workers=N` N hot-path workers on one port (clusterPhase below).
 * Servers run as child processes; autocannon runs here. Prints a table and writes bench/results.json.
 *
 * The Redis phases are functions of a `RedisTarget` (the servers' Redis environment), so the same
 * phases run against a Redis Cluster beside the single Redis.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, getPriority, loadavg } from 'node:os';
import { Worker } from 'node:worker_threads';
import autocannon from 'autocannon';
import postgres from 'postgres';
import { waitForEmptyOutbox } from '../../ledger-writer/testing.ts';
import { configFromProcess } from '../../shared/config.ts';
import { ensureDatabase, migrateDatabase } from '../../shared/db/migrate.ts';
import { publishPrice } from '../../shared/redis/account.ts';
import { createRedis, createServiceRedis, deletePrefix, primaries } from '../../shared/redis/client.ts';
import { OUTBOX_SHARDS } from '../../shared/redis/keys.ts';
import { publishAsset } from '../../shared/redis/market.ts';
import { freePort, startRedisServer } from '../../test/support/processes.ts';
import { startRedisCluster } from '../../test/support/redis-cluster.ts';
import { authorizationRequest, signPayload } from '../../test/support/stripe-issuing-events.ts';
import type { OpenLoopResult, Transport } from './open-loop.ts';
import type { OpenLoopWorkerData } from './open-loop-worker.ts';
import { cpuSpent, processCpuMs, processesCpuMs } from './proc-cpu.ts';
import { analyseTail, mergeProbes, mergeRuns, mergeTimelines, startTimeline, type Timeline } from './tail.ts';
import type { ProbeReport } from './tail-probe.ts';

const USERS = 10_000;
const args = process.argv.slice(2);
const MEASURE_S = Number(args.find((a) => /^\d+$/.test(a)) ?? 10);
/** `--profile`: each server writes a CPU profile to bench/profiles when it stops. */
const PROFILE = args.includes('--profile');
/** `--heap-profile`: each server writes a sampling heap (allocation) profile to bench/profiles when it stops. */
const HEAP_PROFILE = args.includes('--heap-profile');
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

/** `--server-log-level=L`: the servers log at L (default error), each into bench/logs/. */
const SERVER_LOG_LEVEL = args
  .find((a) => a.startsWith('--server-log-level='))
  ?.slice('--server-log-level='.length);
/** What each server printed last (its errors), shown when the bench fails. */
const serverOutputs = new Map<string, () => string>();
const SERVER_OUTPUT_KEPT_CHARS = 20_000;
process.on('exit', (code) => {
  if (code === 0) return;
  for (const [name, output] of serverOutputs) {
    const text = output().trim();
    if (text !== '') process.stderr.write(`--- ${name} printed:\n${text.slice(-4_000)}\n`);
  }
});

/** Every server started, so none outlives the bench (servers in their own session are not in its group). */
const started = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of started) if (child.exitCode === null) child.kill('SIGKILL');
});

/**
 * `--priority=N` (opt-in, N < 0 needs root): the bench's own session and every server it starts in a
 * session of its own (the tail's `ownSessions` variants, the private Redis) get autogroup nice N — the
 * latency chain ahead of everything else on the machine, as if it had cores of its own. For looking at
 * our own causes of the tail on a machine saturated by others; the figures say when it was used.
 */
const PRIORITY = Number(args.find((a) => a.startsWith('--priority='))?.slice('--priority='.length) ?? 0);
// The bench's session is the caller's shell's too: its autogroup's nice is put back on exit.
if (PRIORITY !== 0) {
  const ownGroupNiceBefore = /nice (-?\d+)/.exec(readFileSync('/proc/self/autogroup', 'utf8'))?.[1] ?? '0';
  writeFileSync('/proc/self/autogroup', String(PRIORITY));
  process.on('exit', () => writeFileSync('/proc/self/autogroup', ownGroupNiceBefore));
}

/**
 * `--redis=private`: a redis-server of the bench's own (no persistence, in a session of its own, at
 * PRIORITY) instead of the shared one at REDIS_URL, whose CPU and latency every user of the machine
 * shares.
 */
const PRIVATE_REDIS = args.includes('--redis=private');
let privateRedisPid: number | undefined;
async function startPrivateRedis(): Promise<string> {
  const redisPort = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore', detached: true },
  );
  started.add(child);
  privateRedisPid = child.pid;
  if (PRIORITY !== 0 && child.pid !== undefined)
    writeFileSync(`/proc/${child.pid}/autogroup`, String(PRIORITY));
  const url = `redis://127.0.0.1:${redisPort}`;
  const probe = createRedis({ url });
  for (let attempt = 0; probe.status !== 'ready'; attempt++) {
    if (attempt > 100) throw new Error('bench: the private redis-server did not start in 10 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  probe.disconnect();
  return url;
}
const redisUrl = PRIVATE_REDIS ? await startPrivateRedis() : config.REDIS_URL;
/** The bench's Redis as the servers see it: the private one, or the configured Redis or cluster. */
const benchTarget = PRIVATE_REDIS ? { REDIS_URL: redisUrl, REDIS_CLUSTER_NODES: [] } : config;
/** A client of the bench's own for that Redis (a Cluster client when REDIS_CLUSTER_NODES is set). */
const benchRedis = () => createServiceRedis(benchTarget);

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
  // The servers here connect as the database's owner, not the services' roles: give the bench's database
  // what those roles have (drizzle/0022), no JIT, or a rebuild's statement compiles for 0.8 s.
  await sql.unsafe('alter database credana_bench set jit = off');
  const redis = benchRedis();
  await sql`insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
    liquidation_threshold_bps, price_age_max_s) values ('WETH', 31337, '0x0000000000000000000000000000000000000001', 18,
    '0x0000000000000000000000000000000000000002', 8, 8000, 8250, 86400)`;
  await seedMarket(redis);
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

/** Empties the bench's prefix in `redis` and publishes WETH and its price there (accounts are built from Postgres). */
async function seedMarket(redis: ReturnType<typeof createServiceRedis>): Promise<void> {
  await deletePrefix(redis, PREFIX);
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
    updatedAtS: Math.floor(Date.now() / 1000),
    roundId: 1n,
  });
}

const redisPid = await (async () => {
  const probe = benchRedis();
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
  port: number;
  stop(): Promise<void>;
}

/**
 * The Redis the servers of a phase talk to, as their environment. The phases below take one, so a Redis
 * Cluster target (REDIS_CLUSTER_NODES) can run the same phases beside the single Redis.
 */
interface RedisTarget {
  label: string;
  env: Record<string, string>;
}
const singleRedis: RedisTarget = {
  label: PRIVATE_REDIS
    ? 'single Redis (private)'
    : benchTarget.REDIS_CLUSTER_NODES.length > 0
      ? 'Redis Cluster (REDIS_CLUSTER_NODES)'
      : 'single Redis',
  env: { REDIS_URL: redisUrl, REDIS_CLUSTER_NODES: benchTarget.REDIS_CLUSTER_NODES.join(',') },
};

interface ServerOptions {
  target?: RedisTarget;
  extra?: Record<string, string>;
  /** Node flags before the entry (e.g. `--max-semi-space-size=32`). */
  nodeFlags?: string[];
  /** Load tail-probe.ts into the server and open an IPC channel to it. */
  probe?: boolean;
  /** Start under `nice -n N` (lower priority; needs no privilege). */
  nice?: number;
  /**
   * Start in a session of its own (setsid). Linux with sched_autogroup_enabled (this machine) shares the
   * CPU fairly between sessions first and between a session's processes second, so servers started in
   * the bench's session share one slice with each other and the load generator, and niceness counts
   * only inside a session; in its own session a server gets a slice of its own — as a service in its own
   * cgroup does in production. Its niceness is then set on its autogroup (/proc/<pid>/autogroup).
   */
  ownSession?: boolean;
  /** The autogroup's nice when in a session of its own (default: `nice`). */
  autogroupNice?: number;
}

async function startServer(
  entry: string,
  port: number,
  ready: string,
  options: ServerOptions = {},
): Promise<Server> {
  const profile = [
    ...(PROFILE ? ['--cpu-prof', '--cpu-prof-dir=bench/profiles'] : []),
    ...(HEAP_PROFILE ? ['--heap-prof', '--heap-prof-dir=bench/profiles', '--heap-prof-interval=32768'] : []),
  ];
  const probe = options.probe === true ? ['--import', './scripts/bench/tail-probe.ts'] : [];
  const nodeArgs = [...(options.nodeFlags ?? []), ...profile, '--import', 'tsx', ...probe, entry];
  // `nice` execs node: the child's pid is node's.
  const [command, args] =
    options.nice === undefined || options.nice === 0
      ? [process.execPath, nodeArgs]
      : ['nice', ['-n', String(options.nice), process.execPath, ...nodeArgs]];
  const child = spawn(command, args, {
    env: {
      PATH: process.env['PATH'] ?? '',
      NODE_ENV: 'test',
      // Errors only (none in a healthy run): a bug answered 500 is then in the output printed on failure.
      LOG_LEVEL: SERVER_LOG_LEVEL ?? 'error',
      DATABASE_URL: databaseUrl,
      ...(options.target ?? singleRedis).env,
      REDIS_KEY_PREFIX: PREFIX,
      STRIPE_WEBHOOK_SECRETS: SECRET,
      HOT_PATH_PORT: String(port),
      // Several hot paths may run at once (the tail's variants): each takes a free internal port.
      HOT_PATH_METRICS_PORT: '0',
      // The hot path's public port serves /metrics only to this bearer (scrape() below).
      METRICS_TOKEN,
      VELOCITY_LIMIT_PER_MIN: '10000',
      DATABASE_POOL_MAX: '20',
      ...options.extra,
    },
    stdio: options.probe === true ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
    detached: options.ownSession === true,
  });
  started.add(child);
  const groupNice = options.autogroupNice ?? options.nice ?? 0;
  if (options.ownSession === true && groupNice !== 0 && child.pid !== undefined) {
    try {
      writeFileSync(`/proc/${child.pid}/autogroup`, String(groupNice));
    } catch {
      // No autogroups here (or a negative nice without the privilege): the process niceness stands.
    }
  }
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString()).slice(-SERVER_OUTPUT_KEPT_CHARS);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  if (SERVER_LOG_LEVEL !== undefined) {
    mkdirSync('bench/logs', { recursive: true });
    const file = `bench/logs/${entry.replaceAll('/', '_')}-${port}-${child.pid}.log`;
    const append = (b: Buffer) => appendFileSync(file, b);
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
  }
  serverOutputs.set(`${entry} :${port} (pid ${child.pid})`, () => out);
  // A slow start on a saturated machine is no measurement: wait up to 3 minutes.
  const until = Date.now() + 180_000;
  while (!out.includes(ready)) {
    if (child.exitCode !== null || Date.now() > until)
      throw new Error(`${entry} did not start: ${out.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    port,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGCONT');
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/** A process's scheduler autogroup and its nice ("/autogroup-107 nice 0"), where Linux has them. */
function autogroupOf(pid: number | undefined): string | null {
  if (pid === undefined) return null;
  try {
    return readFileSync(`/proc/${pid}/autogroup`, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Starts a new probe window in a server started with `probe: true`. */
function probeReset(server: Server): void {
  server.child.send({ probe: 'reset' });
}

/** What the probe recorded since its window started. */
function probeReport(server: Server): Promise<ProbeReport> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('tail probe did not report in 10 s')), 10_000);
    const onMessage = (message: { probeReport?: ProbeReport }) => {
      if (message?.probeReport === undefined) return;
      clearTimeout(timer);
      server.child.off('message', onMessage);
      resolve(message.probeReport);
    };
    server.child.on('message', onMessage);
    server.child.send({ probe: 'report' });
  });
}

/** Opens /metrics on the hot path's public port for this run (the ledger writer's port is internal). */
const METRICS_TOKEN = `bench_${randomBytes(16).toString('hex')}`;

let sequence = 0;
/** A distinct `issuing_authorization.request` in Stripe's wire format (shared builder), signed. */
function signedRequest(users = USERS): { body: string; headers: Record<string, string> } {
  sequence++;
  const body = JSON.stringify(
    authorizationRequest({
      cardId: `ic_bench_${(sequence % users) + 1}`,
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
function pregenerate(count: number, users = USERS): { body: string; headers: Record<string, string> }[] {
  return Array.from({ length: count }, () => signedRequest(users));
}

async function load(
  port: number,
  seconds: number,
  options: { amount?: number; expectedRps?: number; allowErrors?: boolean; users?: number } = {},
) {
  const pool = pregenerate(
    options.amount ?? Math.ceil(seconds * (options.expectedRps ?? 20_000) * 1.2),
    options.users,
  );
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
  if (options.allowErrors !== true && (result.non2xx > 0 || result.errors > 0))
    throw new Error(
      `load run had ${result.non2xx} non-2xx and ${result.errors} errors (status codes ${JSON.stringify(result.statusCodeStats)})`,
    );
  return result;
}

/**
 * The fixed-rate phase: an open loop (open-loop.ts) in a worker thread of its own (open-loop-worker.ts),
 * every body distinct and signed beforehand.
 */
async function fixedRate(
  port: number,
  seconds: number,
  ratePerS: number,
  options: { allowErrors?: boolean; users?: number; transport?: Transport } = {},
): Promise<OpenLoopResult> {
  const workerData: OpenLoopWorkerData = {
    url: `http://127.0.0.1:${port}`,
    ratePerS,
    seconds,
    connectionsMax: 64,
    transport: options.transport ?? 'http',
    path: '/stripe/authorizations',
    requests: pregenerate(Math.ceil(seconds * ratePerS), options.users),
  };
  const worker = new Worker(new URL('./open-loop-worker.ts', import.meta.url), { workerData });
  const result = await new Promise<OpenLoopResult>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`open-loop worker exited with ${code}`)));
  });
  await worker.terminate();
  if (options.allowErrors !== true && (result.non2xx > 0 || result.errors > 0))
    throw new Error(`fixed-rate run had ${result.non2xx} non-2xx and ${result.errors} errors`);
  return result;
}

/** Sets the CPUs every thread of `pid` may run on (`taskset -a -p -c`). */
function setCpus(pid: number | undefined, list: string): void {
  if (pid !== undefined) execFileSync('taskset', ['-a', '-p', '-c', list, String(pid)], { stdio: 'ignore' });
}

/**
 * Pins the hot path to the last CPU and the bench, the active writer and a private Redis to the others
 * (TailVariant.hotPathCore); returns the undoing, which lets each run anywhere again.
 */
function pinHotPath(hot: Server, writer: Server | undefined): () => void {
  const n = cpus().length;
  if (n < 2) throw new Error('hotPathCore needs two CPUs or more');
  const all = `0-${n - 1}`;
  const others = n === 2 ? '0' : `0-${n - 2}`;
  const rest = [process.pid, writer?.child.pid, privateRedisPid];
  setCpus(hot.child.pid, String(n - 1));
  for (const pid of rest) setCpus(pid, others);
  return () => {
    for (const pid of [hot.child.pid, ...rest]) setCpus(pid, all);
  };
}

/**
 * Waits until `writer` owns every outbox shard (up to 60 s). A writer starved of CPU (nice 19 on a
 * saturated machine) can keep losing leases as it takes them: the round then runs with what it owns,
 * and the log says so.
 */
async function ownsEveryShard(writer: Server): Promise<void> {
  const until = Date.now() + 60_000;
  for (;;) {
    const owned = sumOf(await scrape(writer.port), 'credana_ledger_shards_owned');
    if (owned === OUTBOX_SHARDS) return;
    if (Date.now() > until) {
      log(`bench: WARNING the writer owns ${owned} of ${OUTBOX_SHARDS} shards after 60 s; measuring anyway`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
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
 * One decision per user, twice: a cold process's first decision for a user builds the account from
 * Postgres, and on a busy machine some of 64 at once run past their budget and are declined
 * (`system_unavailable`) with the account still unbuilt — the second pass builds those, so no measured
 * round pays for rebuilds the other contestants did not.
 */
async function warmUp(port: number): Promise<void> {
  await load(port, 0, { amount: USERS });
  await load(port, 0, { amount: USERS });
}

/** A hot path's decisions so far by reason and source, e.g. `approved/redis 48000, approved/postgres 12`. */
async function decisionSources(port: number): Promise<string> {
  return [...(await scrape(port))]
    .filter(([key]) => key.startsWith('credana_decisions_total{'))
    .map(
      ([key, value]) => `${/reason="([^"]*)"/.exec(key)?.[1]}/${/source="([^"]*)"/.exec(key)?.[1]} ${value}`,
    )
    .join(', ');
}

function sumOf(values: Map<string, number>, name: string): number {
  let total = 0;
  for (const [key, value] of values) if (key === name || key.startsWith(`${name}{`)) total += value;
  return total;
}

/**
 * The machine's CPU pressure (Linux PSI, /proc/pressure/cpu): µs some task waited for a CPU so far.
 * Over a phase, its share of wall time says how contended the 2 cores were (other helpers included).
 */
function cpuPressureUs(): number | null {
  try {
    const match = /^some .* total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'));
    return match?.[1] === undefined ? null : Number(match[1]);
  } catch {
    return null;
  }
}

/** Load average and CPU pressure over a phase, so each figure carries how loaded the machine was. */
function machineMeter() {
  const startedAt = Date.now();
  const pressureBefore = cpuPressureUs();
  const loadBefore = loadavg()[0] ?? 0;
  return () => {
    const pressureAfter = cpuPressureUs();
    const wallUs = (Date.now() - startedAt) * 1000;
    return {
      loadAverage1m: [Math.round(loadBefore * 100) / 100, Math.round((loadavg()[0] ?? 0) * 100) / 100],
      cpuPressureSomeShare:
        pressureBefore === null || pressureAfter === null || wallUs === 0
          ? null
          : Math.round(((pressureAfter - pressureBefore) / wallUs) * 1000) / 1000,
    };
  };
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

/** Deletes every key under a prefix (SCAN + UNLINK on every primary): the floor's holds and streams after its rounds. */
async function unlinkMatching(redis: ReturnType<typeof benchRedis>, prefix: string): Promise<void> {
  await deletePrefix(redis, prefix);
}

// ---------------------------------------------------------------------------------------------------
// The tail: fixed rate, writer alongside, variants in alternating rounds.

/**
 * One way of running the hot path and the writer side by side. `before` is how they ran until now;
 * the others are the tail fixes tried, alone and together (see docs/hot-path.md, "The tail").
 */
interface TailVariant {
  name: string;
  /** Node flags of the hot-path process. */
  hotPathFlags: string[];
  /** The hot path's niceness; below 0 needs root. */
  hotPathNice: number;
  /** The writer's niceness (0 = the hot path's); null: the writer paused (SIGSTOP). */
  writerNice: number | null;
  /**
   * Each server in a session (and so a scheduler autogroup) of its own, as each service has a cgroup of
   * its own in production, instead of sharing the bench's: see startServer's `ownSession`.
   */
  ownSessions: boolean;
  /** How the load generator speaks HTTP (open-loop.ts `Transport`); default `http`. */
  transport?: Transport;
  /**
   * The hot path on a CPU of its own, as on the dedicated compute production gives it: during the
   * variant's rounds the hot path is pinned (taskset) to the last CPU and this process (the load
   * generator), the writer and a private Redis (`--redis=private`) to the others. Postgres and the
   * shared Redis are not ours to pin; they, and other tenants, still run anywhere.
   */
  hotPathCore?: boolean;
  /** The hot path's entry point: this checkout's, or (`baseline:<variant>`) the --baseline checkout's. */
  hotPathEntry?: string;
  /** What the server prints once it listens (default: the hot path's). */
  ready?: string;
}

const TAIL_VARIANTS: Record<string, TailVariant> = {
  before: { name: 'before', hotPathFlags: [], hotPathNice: 0, writerNice: 0, ownSessions: false },
  // The reference: no writer at all during the rounds (its backlog is written between them).
  writerPaused: {
    name: 'writerPaused',
    hotPathFlags: [],
    hotPathNice: 0,
    writerNice: null,
    ownSessions: false,
  },
  writerNice: { name: 'writerNice', hotPathFlags: [], hotPathNice: 0, writerNice: 19, ownSessions: false },
  semiSpace: {
    name: 'semiSpace',
    hotPathFlags: ['--max-semi-space-size=32'],
    hotPathNice: 0,
    writerNice: 0,
    ownSessions: false,
  },
  hotPathFirst: {
    name: 'hotPathFirst',
    hotPathFlags: [],
    hotPathNice: -10,
    writerNice: 0,
    ownSessions: false,
  },
  ownSessions: { name: 'ownSessions', hotPathFlags: [], hotPathNice: 0, writerNice: 0, ownSessions: true },
  after: { name: 'after', hotPathFlags: [], hotPathNice: 0, writerNice: 19, ownSessions: true },
  // `after` with V8's garbage collection on the main thread only: a parallel scavenge waits for its helper
  // threads, which on a saturated 2-vCPU machine may not get a CPU (longer pauses, not fewer).
  singleThreadedGc: {
    name: 'singleThreadedGc',
    hotPathFlags: ['--single-threaded-gc'],
    hotPathNice: 0,
    writerNice: 19,
    ownSessions: true,
  },
  // `after` measured with the lighter load generator: the same requests, pre-serialised, on raw sockets.
  afterSocket: {
    name: 'afterSocket',
    hotPathFlags: [],
    hotPathNice: 0,
    writerNice: 19,
    ownSessions: true,
    transport: 'socket',
  },
  afterSocketCore: {
    name: 'afterSocketCore',
    hotPathFlags: [],
    hotPathNice: 0,
    writerNice: 19,
    ownSessions: true,
    transport: 'socket',
    hotPathCore: true,
  },
  writerPausedSocket: {
    name: 'writerPausedSocket',
    hotPathFlags: [],
    hotPathNice: 0,
    writerNice: null,
    ownSessions: false,
    transport: 'socket',
  },
  // The architecture floor in the hot path's place, at the same rate with the same generator: the tail
  // that any design of this shape gets on this machine (nothing for the writer to write: paused).
  floorSocket: {
    name: 'floorSocket',
    hotPathFlags: [],
    hotPathNice: 0,
    writerNice: null,
    ownSessions: false,
    transport: 'socket',
    hotPathEntry: 'scripts/bench/floor-server.ts',
    ready: 'floor ready',
  },
};
const hotPathKey = (v: TailVariant) =>
  `${v.hotPathNice}|${v.ownSessions}|${v.hotPathFlags.join(' ')}|${v.hotPathEntry ?? ''}`;
const writerKey = (v: TailVariant) => `${v.writerNice ?? 0}|${v.ownSessions}`;

/**
 * `--tail=before,after` chooses the variants (default: before, after, afterSocket, afterSocketCore: the
 * shipped configuration measured with Node's HTTP client as the generator, with the raw-socket generator,
 * and with the hot path on a CPU of its own). `baseline:<variant>` runs that variant on the hot path of
 * the `--baseline=DIR` checkout: a change's tail before and after, in the same rounds.
 */
const tailVariantNames = (
  args.find((a) => a.startsWith('--tail='))?.slice('--tail='.length) ??
  'before,after,afterSocket,afterSocketCore'
).split(',');
for (const name of tailVariantNames) {
  const [prefix, rest] = name.startsWith('baseline:') ? ['baseline:', name.slice(9)] : ['', name];
  const variant = TAIL_VARIANTS[rest];
  if (variant === undefined)
    throw new Error(`unknown tail variant ${name}: one of ${Object.keys(TAIL_VARIANTS).join(', ')}`);
  if (prefix === '') continue;
  const baselineDir = args.find((a) => a.startsWith('--baseline='))?.slice('--baseline='.length);
  if (baselineDir === undefined) throw new Error(`tail variant ${name} needs --baseline=DIR`);
  TAIL_VARIANTS[name] = { ...variant, name, hotPathEntry: `${baselineDir}/hot-path/main.ts` };
}
const TAIL_ROUNDS = Number(args.find((a) => a.startsWith('--tail-rounds='))?.slice(14) ?? 3);
const TAIL_ROUND_S = Number(args.find((a) => a.startsWith('--tail-round-s='))?.slice(15) ?? 5);

interface WriterSide {
  /**
   * The writers, by writerKey, all in one consumer group; only the one in use runs, the others are
   * stopped. `main` is the one of the other phases.
   */
  writers: Map<string, Server>;
  main: Server;
  /** Waits until every outbox stream is empty; returns the ms it took. */
  drained(): Promise<number>;
  /** The writers' Postgres backends' pids (their CPU is the writer's too). */
  backendPids(): Promise<number[]>;
}

/**
 * The fixed-rate tail phase against one Redis target: each variant runs `rounds` rounds of `seconds`
 * at FIXED_RATE, in rotating order (ABC, BCA, CAB…), so a noisy neighbour hits every variant alike.
 */
async function tailPhase(
  target: RedisTarget,
  variants: TailVariant[],
  hotPaths: Map<string, Server>,
  side: WriterSide,
  rounds: number,
  seconds: number,
) {
  const runs = new Map<string, { open: OpenLoopResult[]; probes: ProbeReport[]; timelines: Timeline[] }>();
  for (const v of variants) runs.set(v.name, { open: [], probes: [], timelines: [] });
  const backends = await side.backendPids();
  const meter = machineMeter();
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < variants.length; k++) {
      const variant = variants[(r + k) % variants.length]!;
      const hot = hotPaths.get(hotPathKey(variant))!;
      let active: Server | undefined;
      for (const [key, writer] of side.writers) {
        if (variant.writerNice !== null && writerKey(variant) === key) active = writer;
        else writer.child.kill('SIGSTOP');
      }
      active?.child.kill('SIGCONT');
      // The writers share the outbox shards by lease (ledger-writer/shards.ts): the one resumed takes over
      // the shards of the one stopped before the round is measured, or "the writer alongside" would be
      // a writer that owns a few shards or none.
      if (active !== undefined) await ownsEveryShard(active);
      // A stopped writer's last XREADGROUP BLOCK (LEDGER_BATCH_WAIT_MS) must time out before any entry
      // arrives, or Redis would hand that entry to the stopped consumer.
      await new Promise((resolve) => setTimeout(resolve, 100));
      log(`bench: tail (${target.label}) round ${r + 1}/${rounds}: ${variant.name}`);
      const pinned = variant.hotPathCore === true ? pinHotPath(hot, active) : () => {};
      probeReset(hot);
      const timeline = startTimeline({
        hotPath: hot.child.pid!,
        writer: active?.child.pid,
        writerBackends: backends,
      });
      const open = await fixedRate(hot.port, seconds, FIXED_RATE, { transport: variant.transport ?? 'http' });
      pinned();
      const run = runs.get(variant.name)!;
      run.timelines.push(timeline.stop());
      run.probes.push(await probeReport(hot));
      run.open.push(open);
      // Every round starts from an empty outbox: a paused variant's backlog is written here, unmeasured.
      side.main.child.kill('SIGCONT');
      await side.drained();
    }
  }
  const machine = meter();
  const out: Record<
    string,
    ReturnType<typeof analyseTail> & {
      variant: TailVariant;
      hotPathNiceActual: number | null;
      autogroups: { hotPath: string | null; writer: string | null };
    }
  > = {};
  for (const v of variants) {
    const run = runs.get(v.name)!;
    const pid = hotPaths.get(hotPathKey(v))?.child.pid;
    out[v.name] = {
      variant: v,
      // What the hot path really ran at: `nice -n -10` without the privilege runs it at 0.
      hotPathNiceActual: pid === undefined ? null : getPriority(pid),
      autogroups: {
        hotPath: autogroupOf(pid),
        writer: v.writerNice === null ? null : autogroupOf(side.writers.get(writerKey(v))?.child.pid),
      },
      ...analyseTail(mergeRuns(run.open), mergeProbes(run.probes), mergeTimelines(run.timelines)),
    };
  }
  return { target: target.label, rounds, secondsPerRound: seconds, machine, variants: out };
}

/**
 * The hot path against the architecture floor, full speed, the writer paused: `rounds` alternating
 * rounds of `seconds` each (hot, floor, floor, hot, …), requests/s summed over each side's rounds.
 */
async function floorPhase(hot: Server, floor: Server, rounds: number, seconds: number, baseline?: Server) {
  const servers: [Contestant, Server][] = [
    ['hot', hot],
    ['floor', floor],
  ];
  if (baseline !== undefined) servers.push(['baseline', baseline]);
  const side = new Map<Contestant, { requests: number; s: number; cpu: Record<string, number | null>[] }>();
  for (const [which] of servers) side.set(which, { requests: 0, s: 0, cpu: [] });
  const cleanup = benchRedis();
  const meter = machineMeter();
  for (let r = 0; r < rounds; r++) {
    // Rotating order (AB, BA; ABC, BCA, CAB…): a noisy neighbour hits every contestant alike.
    for (let k = 0; k < servers.length; k++) {
      const [which, server] = servers[(r + k) % servers.length]!;
      const figures = side.get(which)!;
      const cpuBefore = cpuNow(server);
      const run = await load(server.port, seconds);
      figures.requests += run.requests.total;
      figures.s += run.duration;
      figures.cpu.push(cpuPerRequestUs(cpuSpent(cpuBefore, cpuNow(server)), run.requests.total));
      // The floor's streams are drained by no one: dropped after each of its rounds.
      if (which === 'floor') await unlinkMatching(cleanup, `${PREFIX}floor:`);
    }
  }
  cleanup.disconnect();
  const rps = (which: Contestant) => {
    const figures = side.get(which);
    return figures === undefined ? undefined : figures.requests / figures.s;
  };
  const hotRps = rps('hot')!;
  const floorRps = rps('floor')!;
  const baselineRps = rps('baseline');
  return {
    machine: meter(),
    hotPathRps: round(hotRps, 0),
    floorRps: round(floorRps, 0),
    ratioToFloor: round(hotRps / floorRps),
    cpuUsPerRequest: { hotPath: side.get('hot')!.cpu.at(-1), floor: side.get('floor')!.cpu.at(-1) },
    ...(baselineRps === undefined
      ? {}
      : {
          baseline: {
            dir: BASELINE_DIR,
            rps: round(baselineRps, 0),
            ratioToFloor: round(baselineRps / floorRps),
            hotPathToBaseline: round(hotRps / baselineRps),
            cpuUsPerRequest: side.get('baseline')!.cpu,
            hotPathCpuUsPerRequest: side.get('hot')!.cpu,
            floorCpuUsPerRequest: side.get('floor')!.cpu,
          },
        }),
  };
}

type Contestant = 'hot' | 'floor' | 'baseline';

/**
 * `--baseline=DIR`: another checkout of this repository (say `git worktree add DIR <commit>`, with its
 * node_modules) whose hot path runs as a third contestant in the floor's alternating rounds — the same
 * database, Redis and load as this checkout's, so "before and after a change" comes from one run.
 */
const BASELINE_DIR = args.find((a) => a.startsWith('--baseline='))?.slice('--baseline='.length);

// ---------------------------------------------------------------------------------------------------
// Redis Cluster beside single Redis (and, with --workers=N, N hot-path workers on one port).

/**
 * `--cluster-rate=N`: the fixed rate of the cluster phase's latency rounds (default 250/s: a rate this
 * shared 2-core machine sustains on every variant, so the percentiles are answers, not queues).
 */
const CLUSTER_RATE = Number(args.find((a) => a.startsWith('--cluster-rate='))?.slice(15) ?? 250);
/** `--workers=N` (N > 1): a variant with HOT_PATH_WORKERS=N on the single Redis in the cluster phase. */
const WORKERS = Number(args.find((a) => a.startsWith('--workers='))?.slice(10) ?? 1);
/**
 * `--cluster-users=N`: the users the cluster phase spreads its swipes over (default 1,000 of the 10,000):
 * each variant's server builds every one of their accounts before it is measured, which on a starved
 * machine takes minutes per 10,000.
 */
const CLUSTER_USERS = Math.min(
  USERS,
  Number(args.find((a) => a.startsWith('--cluster-users='))?.slice(16) ?? 1_000),
);
/** `--cluster-rounds=N`: rounds of every variant in the cluster phase (default 2). */
const CLUSTER_ROUNDS = Number(args.find((a) => a.startsWith('--cluster-rounds='))?.slice(17) ?? 2);
/** `--cluster-only`: only the cluster phase, written into bench/results.json's `cluster` alone. */
const CLUSTER_ONLY = args.includes('--cluster-only');

interface ClusterVariant {
  name: string;
  target: RedisTarget;
  extra: Record<string, string>;
}

interface ClusterSide {
  requests: number;
  errors: number;
  s: number;
  fixed: OpenLoopResult[];
}

/** Per variant: decisions/s at full speed and the fixed-rate latencies, merged over the rounds. */
function variantFigures(variants: readonly ClusterVariant[], side: ReadonlyMap<string, ClusterSide>) {
  const figures: Record<
    string,
    {
      decisionsPerS: number;
      fullSpeedErrors: number;
      p50Ms: number;
      p99Ms: number;
      p999Ms: number;
      maxMs: number;
      fixedRateAchievedPerS: number;
      fixedRateErrors: number;
    }
  > = {};
  for (const variant of variants) {
    const out = side.get(variant.name)!;
    const fixed = mergeRuns(out.fixed);
    figures[variant.name] = {
      decisionsPerS: round(out.requests / out.s, 0),
      fullSpeedErrors: out.errors,
      p50Ms: fixed.p50Ms,
      p99Ms: fixed.p99Ms,
      p999Ms: fixed.p999Ms,
      maxMs: fixed.maxMs,
      fixedRateAchievedPerS: fixed.achievedPerS,
      fixedRateErrors: fixed.errors + fixed.non2xx,
    };
  }
  return figures;
}

/**
 * The hot path on a private 3-primary Redis Cluster (six nodes, test/support/redis-cluster.ts) beside a
 * private single redis-server with the same persistence (AOF, appendfsync always, noeviction), the
 * writer paused (nothing drains either outbox, as in the floor phase): full-speed rounds (decisions/s)
 * and fixed-rate rounds at CLUSTER_RATE (p50/p99/p99.9, open loop), every variant in rotating order so
 * a noisy neighbour hits each alike. Variants: single, single with a replica (as each cluster primary
 * has: the ratio to it is the cluster's own cost, not replication's), a cluster of one primary and its
 * replica (cluster mode and its client, no more processes than that), cluster, cluster with
 * REDIS_WAIT_REPLICAS=1 (the WAIT cost), and with --workers=N the single Redis with N workers.
 */
/**
 * The cluster phase's private Redis servers (every one AOF always, noeviction): a single redis-server,
 * another with a replica, a cluster of one primary and its replica, and the 3-primary cluster; the
 * market seeded on each. `destroy` stops them and deletes their data.
 */
async function startClusterTargets() {
  const durable = ['--appendonly', 'yes', '--appendfsync', 'always', '--maxmemory-policy', 'noeviction'];
  const single = await startRedisServer(durable);
  const replicated = await startRedisServer(durable);
  const replica = await startRedisServer([...durable, '--replicaof', '127.0.0.1', String(replicated.port)]);
  const cluster = await startRedisCluster({ nodeTimeoutMs: 5_000 });
  const onePrimary = await startRedisCluster({ nodeTimeoutMs: 5_000, primaries: 1 });
  const killAll = () => {
    for (const node of [...cluster.nodes, ...onePrimary.nodes]) void node.kill();
    for (const server of [single, replicated, replica]) void server.kill();
  };
  process.on('exit', killAll);
  const clusterEnv = (seeds: string[]) => ({
    REDIS_URL: `redis://${seeds[0]}`,
    REDIS_CLUSTER_NODES: seeds.join(','),
  });
  const targets = {
    single: {
      label: 'single Redis (private, AOF always)',
      env: { REDIS_URL: single.url, REDIS_CLUSTER_NODES: '' },
    },
    singleReplicated: {
      label: 'single Redis with a replica (private, AOF always on both)',
      env: { REDIS_URL: replicated.url, REDIS_CLUSTER_NODES: '' },
    },
    clusterOnePrimary: {
      label: 'Redis Cluster of one primary and its replica (private, AOF always)',
      env: clusterEnv(onePrimary.seeds),
    },
    cluster: {
      label: 'Redis Cluster (private, 3 primaries + 3 replicas, AOF always)',
      env: clusterEnv(cluster.seeds),
    },
  } satisfies Record<string, RedisTarget>;
  for (const target of Object.values(targets)) {
    const redis = createServiceRedis({
      REDIS_URL: target.env['REDIS_URL'] ?? '',
      REDIS_CLUSTER_NODES: (target.env['REDIS_CLUSTER_NODES'] ?? '').split(',').filter((n) => n !== ''),
    });
    await seedMarket(redis);
    redis.disconnect();
  }
  return {
    targets,
    async destroy() {
      for (const c of [cluster, onePrimary]) await c.destroy();
      for (const server of [single, replicated, replica]) await server.destroy();
      process.off('exit', killAll);
    },
  };
}

async function clusterPhase(rounds: number, seconds: number) {
  const redisServers = await startClusterTargets();
  const {
    single: singleTarget,
    singleReplicated: replicatedTarget,
    clusterOnePrimary: onePrimaryTarget,
    cluster: clusterTarget,
  } = redisServers.targets;
  const variants: ClusterVariant[] = [
    { name: 'single', target: singleTarget, extra: {} },
    { name: 'singleReplicated', target: replicatedTarget, extra: {} },
    { name: 'clusterOnePrimary', target: onePrimaryTarget, extra: {} },
    { name: 'cluster', target: clusterTarget, extra: {} },
    // WAIT's timeout within a decision budget this machine's load needs (REDIS_WAIT_TIMEOUT_MS ≤ half).
    {
      name: 'clusterWait1',
      target: clusterTarget,
      extra: { REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: '50' },
    },
  ];
  if (WORKERS > 1) {
    variants.push({
      name: `singleWorkers${WORKERS}`,
      target: singleTarget,
      // The bench connects straight to Postgres (no PgBouncer): the budget check gets the pools' sum.
      extra: { HOT_PATH_WORKERS: String(WORKERS), PGBOUNCER_ROLE_POOL_SIZE: String(WORKERS * 20) },
    });
  }
  const servers = new Map<string, Server>();
  try {
    for (const [k, variant] of variants.entries()) {
      const serverPort = port + 200 + 10 * k;
      const server = await startServer('hot-path/main.ts', serverPort, 'hot-path ready', {
        target: variant.target,
        extra: variant.extra,
      });
      servers.set(variant.name, server);
      // Every account built from Postgres into this Redis once (one decision per user). Not measured:
      // a request autocannon gave up on (10 s, a starved machine) is a cold account the rounds rebuild.
      await load(serverPort, 0, { amount: CLUSTER_USERS, allowErrors: true, users: CLUSTER_USERS });
    }
    const side = new Map<string, ClusterSide>(
      variants.map((v) => [v.name, { requests: 0, errors: 0, s: 0, fixed: [] }]),
    );
    const meter = machineMeter();
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < variants.length; k++) {
        const variant = variants[(r + k) % variants.length]!;
        const server = servers.get(variant.name)!;
        log(
          `bench: cluster phase round ${r + 1}/${rounds}: ${variant.name}, full speed then ${CLUSTER_RATE}/s`,
        );
        // Answers past autocannon's 10 s timeout on a starved machine are counted, not fatal.
        const run = await load(server.port, seconds, { allowErrors: true, users: CLUSTER_USERS });
        const out = side.get(variant.name)!;
        out.requests += run['2xx'];
        out.errors += run.errors + run.non2xx;
        out.s += run.duration;
        out.fixed.push(
          await fixedRate(server.port, seconds, CLUSTER_RATE, { allowErrors: true, users: CLUSTER_USERS }),
        );
      }
    }
    const machine = meter();
    const figures = variantFigures(variants, side);
    const ratio = (a: string, b: string) =>
      figures[a] === undefined || figures[b] === undefined
        ? null
        : round(figures[a].decisionsPerS / figures[b].decisionsPerS);
    return {
      rounds,
      secondsPerRound: seconds,
      users: CLUSTER_USERS,
      fixedRatePerS: CLUSTER_RATE,
      machine,
      targets: {
        single: singleTarget.label,
        singleReplicated: replicatedTarget.label,
        clusterOnePrimary: onePrimaryTarget.label,
        cluster: clusterTarget.label,
      },
      variants: figures,
      clusterToSingle: ratio('cluster', 'single'),
      clusterToSingleReplicated: ratio('cluster', 'singleReplicated'),
      onePrimaryToSingleReplicated: ratio('clusterOnePrimary', 'singleReplicated'),
      waitToNoWaitOnCluster: ratio('clusterWait1', 'cluster'),
      ...(WORKERS > 1 ? { workers: WORKERS, workersToOne: ratio(`singleWorkers${WORKERS}`, 'single') } : {}),
    };
  } finally {
    for (const server of servers.values()) await server.stop();
    await redisServers.destroy();
  }
}

function printCluster(c: Awaited<ReturnType<typeof clusterPhase>>): void {
  log('');
  log(
    `| hot path, writer paused, ${c.users} users, ${c.rounds} × ${c.secondsPerRound} s alternating rounds (load average ${c.machine.loadAverage1m.join(' → ')}, CPU pressure ${c.machine.cpuPressureSomeShare}) | decisions/s (full speed) | p50 / p99 / p99.9 / max ms at ${c.fixedRatePerS}/s |`,
  );
  log('| --- | --- | --- |');
  for (const [name, f] of Object.entries(c.variants))
    log(
      `| ${name} | ${f.decisionsPerS} (${f.fullSpeedErrors} timed out) | ${f.p50Ms} / ${f.p99Ms} / ${f.p999Ms} / ${f.maxMs} (achieved ${f.fixedRateAchievedPerS}/s, ${f.fixedRateErrors} errors) |`,
    );
  log(
    `| ratios | cluster / single ${c.clusterToSingle} (goal ≥ 0.8), / single with a replica ${c.clusterToSingleReplicated}; one-primary cluster / single with a replica ${c.onePrimaryToSingleReplicated}; WAIT 1 / no WAIT on the cluster ${c.waitToNoWaitOnCluster}${c.workers === undefined ? '' : `; ${c.workers} workers / 1 ${c.workersToOne}`} | |`,
  );
}

log(`bench: preparing ${USERS} users in credana_bench (prefix ${PREFIX})`);
await prepare();
const port = 18_787;
const startedMachine = machineMeter();

if (HOT_ONLY) {
  const hot = await startServer('hot-path/main.ts', port, 'hot-path ready');
  await warmUp(port);
  const cpuBefore = cpuNow(hot);
  const rate = args.find((a) => a.startsWith('--rate='))?.slice('--rate='.length);
  if (rate !== undefined) {
    const fixed = await fixedRate(port, MEASURE_S, Number(rate));
    await hot.stop();
    const { samples: _samples, generatorStalls: _stalls, ...figures } = fixed;
    log(`hot path alone at ${rate} req/s (open loop): ${JSON.stringify(figures)}`);
    process.exit(0);
  }
  const run = await load(port, MEASURE_S);
  const cpu = cpuPerRequestUs(cpuSpent(cpuBefore, cpuNow(hot)), run.requests.total);
  log(`decisions (reason/source count, warm-up included): ${await decisionSources(port)}`);
  await hot.stop();
  log(
    `hot path alone: ${Math.round(run.requests.average)} req/s, p50 ${run.latency.p50} ms, p99 ${run.latency.p99} ms; CPU µs per request ${JSON.stringify(cpu)}`,
  );
  process.exit(0);
}

/**
 * `--floor-only`: only the hot path (writer paused: none runs) against the architecture floor, in
 * alternating rounds, with `--baseline=DIR` a third contestant; no results file. For a change to the
 * hot path's cost per decision, measured before and after in one run.
 */
const FLOOR_ONLY = args.includes('--floor-only');
/** `--hot-path-flags=A,B`: Node flags for this checkout's hot path in `--floor-only` (the baseline runs without). */
const HOT_PATH_FLAGS = args
  .find((a) => a.startsWith('--hot-path-flags='))
  ?.slice('--hot-path-flags='.length)
  .split(',');
if (FLOOR_ONLY) {
  const hotServer = await startServer('hot-path/main.ts', port, 'hot-path ready', {
    nodeFlags: HOT_PATH_FLAGS ?? [],
  });
  await warmUp(port);
  let baseline: Server | undefined;
  if (BASELINE_DIR !== undefined) {
    baseline = await startServer(`${BASELINE_DIR}/hot-path/main.ts`, port + 30, 'hot-path ready');
    await warmUp(baseline.port);
  }
  const floorServer = await startServer('scripts/bench/floor-server.ts', port + 50, 'floor ready');
  await load(floorServer.port, 1);
  const rounds = Number(args.find((a) => a.startsWith('--floor-rounds='))?.slice(15) ?? 3);
  const floor = await floorPhase(hotServer, floorServer, rounds, MEASURE_S, baseline);
  // Where the decisions were made: a hot path deciding from Postgres measures the fallback, not itself.
  for (const [name, server] of [
    ['hot path', hotServer],
    ['baseline', baseline],
  ] as const) {
    if (server === undefined) continue;
    log(`decisions of the ${name} (reason/source count): ${await decisionSources(server.port)}`);
  }
  for (const server of [hotServer, floorServer, baseline]) await server?.stop();
  const cleanup = benchRedis();
  await deletePrefix(cleanup, PREFIX);
  cleanup.disconnect();
  const { baseline: baselineFigures, ...figures } = floor;
  log(JSON.stringify(figures));
  if (baselineFigures !== undefined) {
    // CPU µs per request by process, one line per round and contestant.
    const rows = {
      hot: baselineFigures.hotPathCpuUsPerRequest,
      floor: baselineFigures.floorCpuUsPerRequest,
      baseline: baselineFigures.cpuUsPerRequest,
    };
    const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
    for (const [name, rounds] of Object.entries(rows)) {
      for (const cpu of rounds) log(`CPU µs/request ${name}: ${JSON.stringify(cpu)}`);
      const of = (process: string) => median(rounds.map((cpu) => cpu[process] ?? 0));
      log(
        `CPU µs/request ${name}, median of ${rounds.length} rounds: server ${of('server')}, redis ${of('redis')}, load generator ${of('loadGenerator')}`,
      );
    }
  }
  log(
    `| floor | hot path | ratio${baseline === undefined ? '' : ' | baseline | baseline ratio | hot path / baseline'} |`,
  );
  log(
    `| ${floor.floorRps} | ${floor.hotPathRps} | ${floor.ratioToFloor}${floor.baseline === undefined ? '' : ` | ${floor.baseline.rps} | ${floor.baseline.ratioToFloor} | ${floor.baseline.hotPathToBaseline}`} |`,
  );
  process.exit(0);
}

if (CLUSTER_ONLY) {
  const cluster = await clusterPhase(CLUSTER_ROUNDS, Math.max(1, Math.round(MEASURE_S / 2)));
  printCluster(cluster);
  // Into bench/results.json's `cluster`, the other phases' figures left as the last full run wrote them;
  // `measuredAt` and `command` say which run these came from.
  const file = 'bench/results.json';
  let results: Record<string, unknown> = {};
  try {
    results = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {}
  results['cluster'] = {
    measuredAt: new Date().toISOString(),
    command: `npm run bench -- ${args.join(' ')}`,
    ...cluster,
  };
  mkdirSync('bench', { recursive: true });
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  log(`bench: wrote the cluster phase into ${file}`);
  process.exit(0);
}

/** `--tail-only`: only the tail phase (and no results file) — for looking into the tail. */
const TAIL_ONLY = args.includes('--tail-only');

let ceiling: Awaited<ReturnType<typeof load>> | undefined;
let ceilingCpu: Record<string, number | null> = {};
if (!TAIL_ONLY) {
  log('bench: 1/6 ceiling (bare Hono, same body)');
  const ceilingServer = await startServer('scripts/bench/ceiling-server.ts', port, 'ceiling ready');
  await load(port, 2);
  const ceilingCpuBefore = cpuNow(ceilingServer);
  ceiling = await load(port, MEASURE_S);
  ceilingCpu = cpuPerRequestUs(cpuSpent(ceilingCpuBefore, cpuNow(ceilingServer)), ceiling.requests.total);
  await ceilingServer.stop();
}

log('bench: 2/6 hot path: warm-up (one decision per user), the ledger writer draining alongside');
const writerPort = port + 1;
const tailVariants = tailVariantNames.map((name) => TAIL_VARIANTS[name]!);
// The whole write side runs as in production: the ledger writer drains the outbox while the hot path
// answers, and its lag (age of the oldest unwritten entry) is sampled throughout. One writer process
// per niceness the tail's variants use (niceness is fixed at start without privilege), one consumer
// group: the one in use runs, the others are stopped (SIGSTOP) with nothing pending.
const writers = new Map<string, Server>();
const mainWriterKey = writerKey(TAIL_VARIANTS['before']!);
for (const variant of [TAIL_VARIANTS['before']!, ...tailVariants]) {
  const key = writerKey(variant);
  if (writers.has(key)) continue;
  const writerPortOf = writerPort + 100 * writers.size;
  writers.set(
    key,
    await startServer('ledger-writer/main.ts', writerPortOf, 'ledger-writer ready', {
      // A short lease: the writer resumed for a round takes the shards of the one stopped before it
      // within 3.75 s (ownsEveryShard), not 12.5 s — longer than a round.
      extra: { LEDGER_WRITER_PORT: String(writerPortOf), LEDGER_SHARD_LEASE_MS: '3000' },
      nice: variant.writerNice ?? 0,
      ownSession: variant.ownSessions,
    }),
  );
}
const writer = writers.get(mainWriterKey)!;
for (const other of writers.values()) if (other !== writer) other.child.kill('SIGSTOP');
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
const outbox = benchRedis();
const drained = () => waitForEmptyOutbox(outbox, PREFIX, 300_000, 100);
const benchSql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
const writerSide: WriterSide = {
  writers,
  main: writer,
  drained,
  backendPids: async () =>
    (
      await benchSql<{ pid: number }[]>`select pid from pg_stat_activity
        where application_name = 'ledger-writer' and datname = current_database()`
    ).map((row) => row.pid),
};
// One hot-path process per set of Node flags the tail's variants use (the main one: no flags), each
// with the tail probe loaded; warmed up with one decision per user.
const hotPaths = new Map<string, Server>();
const mainHotPathKey = hotPathKey(TAIL_VARIANTS['before']!);
for (const variant of [TAIL_VARIANTS['before']!, ...tailVariants]) {
  const key = hotPathKey(variant);
  if (hotPaths.has(key)) continue;
  const hotPort = port + 10 * hotPaths.size;
  const server = await startServer(
    variant.hotPathEntry ?? 'hot-path/main.ts',
    hotPort,
    variant.ready ?? 'hot-path ready',
    {
      nodeFlags: variant.hotPathFlags,
      nice: variant.hotPathNice,
      ownSession: variant.ownSessions,
      autogroupNice: PRIORITY !== 0 ? PRIORITY : variant.hotPathNice,
      probe: true,
    },
  );
  await warmUp(hotPort);
  hotPaths.set(key, server);
}
const hot = hotPaths.get(mainHotPathKey)!;
await drained();
ledgerLagMsMax = 0;

log(
  `bench: 3/6 the tail: ${FIXED_RATE} requests/s (open loop), the writer alongside, ${tailVariantNames.join(' / ')} in alternating rounds`,
);
const tail = await tailPhase(singleRedis, tailVariants, hotPaths, writerSide, TAIL_ROUNDS, TAIL_ROUND_S);
for (const [key, other] of writers) if (key !== mainWriterKey) await other.stop();
writer.child.kill('SIGCONT');
for (const [key, server] of hotPaths) if (key !== mainHotPathKey) await server.stop();

function printTail(): void {
  log('');
  log(
    `| tail at ${FIXED_RATE}/s, ${tail.rounds} × ${tail.secondsPerRound} s per variant | ${tailVariantNames.join(' | ')} |`,
  );
  log(`| --- |${tailVariantNames.map(() => ' --- |').join('')}`);
  const row = (label: string, cell: (a: (typeof tail.variants)[string]) => string) =>
    log(`| ${label} | ${tailVariantNames.map((n) => cell(tail.variants[n]!)).join(' | ')} |`);
  const pct = (p: { p50: number; p99: number; p999: number; max: number } | null) =>
    p === null ? '-' : `${p.p50} / ${p.p99} / ${p.p999} / ${p.max}`;
  row('latency p50 / p99 / p99.9 / max (ms)', (a) => pct(a.latencyMs));
  row('generator send lag p50 / p99 / p99.9 / max', (a) => pct(a.sendLagMs));
  row('latency from send (without the send lag)', (a) => pct(a.fromSendMs));
  row('in the hot-path server', (a) => pct(a.serverMs));
  row('EVALSHA call → reply', (a) => pct(a.evalshaMs));
  row('event-loop delay p50 / p99 / p99.9 / max', (a) => pct(a.eventLoopDelayMs));
  row('GC: count, total ms, max ms, major', (a) =>
    a.gc === null ? '-' : `${a.gc.count}, ${a.gc.totalMs}, ${a.gc.maxMs}, ${a.gc.major}`,
  );
  row(
    'ms/s: hot path waiting for CPU, hot path CPU, writer CPU, generator waiting, steal, machine busy',
    (a) => Object.values(a.perSecondMs).join(', '),
  );
  const attribution = (x: (typeof tail.variants)[string]['slow']) =>
    `${x.latencyMs} ms: gen lag ${x.generatorSendLagMs}, gen stalled ${x.generatorStalledMs}, gen wait ${x.generatorRunQueueWaitMs}, hot wait ${x.hotPathRunQueueWaitMs}, hot GC ${x.hotPathGcMs}, hot stalled ${x.hotPathStalledMs}; writer ${x.writerCpuMsPerS} ms/s, steal ${x.stealMsPerS} ms/s, machine busy ${x.machineBusyMsPerS} ms/s; CPU by process (ms/s) ${Object.entries(
      x.topProcessesMsPerS,
    )
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`;
  row('answers ≥ p99, mean', (a) => attribution(a.slow));
  row('answers p45–p55, mean', (a) => attribution(a.typical));
  log(`| machine (load average 1 min start/end, CPU pressure) | ${JSON.stringify(tail.machine)} |`);
}

if (TAIL_ONLY) {
  clearInterval(lagSampler);
  printTail();
  await hot.stop();
  for (const w of writers.values()) await w.stop();
  outbox.disconnect();
  await benchSql.end();
  const file = 'bench/tail.json';
  mkdirSync('bench', { recursive: true });
  writeFileSync(file, `${JSON.stringify(tail, null, 2)}\n`);
  log(`bench: wrote ${file}`);
  process.exit(0);
}
await drained();

log('bench: 4/6 hot path at full speed, the writer draining alongside');
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
// own: what the hot path does with these 2 cores to itself, Redis and the load generator — in
// alternating rounds with the architecture floor, which gets the same 2 cores. The backlog the hot
// path leaves is then written, and how long that takes is reported.
log(
  'bench: 4/6 hot path at full speed, the writer paused, against the architecture floor (alternating rounds)',
);
sampleLag = false;
writer.child.kill('SIGSTOP');
const floorServer = await startServer('scripts/bench/floor-server.ts', port + 50, 'floor ready');
await load(floorServer.port, 1);
const floor = await floorPhase(hot, floorServer, 2, Math.max(1, Math.round(MEASURE_S / 2)));
await floorServer.stop();
await unlinkMatching(outbox, `${PREFIX}floor:`);
writer.child.kill('SIGCONT');
const pausedBacklogDrainMs = await drained();
await hot.stop();
clearInterval(lagSampler);
await writer.stop();
outbox.disconnect();
await benchSql.end();
const decisions = sumOf(after, 'credana_decisions_total') - sumOf(before, 'credana_decisions_total');
const trips =
  sumOf(after, 'credana_decision_redis_round_trips_total') -
  sumOf(before, 'credana_decision_redis_round_trips_total');
const fallbacks =
  sumOf(after, 'credana_decision_fallbacks_total') - sumOf(before, 'credana_decision_fallbacks_total');
// Round trips are counted for decisions made in Redis; a fallback (the Redis attempt out of its budget on
// a saturated machine) makes none and would pull the mean below 1.
const redisDecisions = (values: Map<string, number>) => {
  let total = 0;
  for (const [key, value] of values)
    if (key.startsWith('credana_decisions_total{') && key.includes('source="redis"')) total += value;
  return total;
};
const decisionsInRedis = redisDecisions(after) - redisDecisions(before);

log('bench: 5/6 Postgres only (row-locked check-and-hold)');
const pgServer = await startServer('scripts/bench/postgres-only-server.ts', port, 'postgres-only ready');
await load(port, 2);
const pgCpuBefore = cpuNow(pgServer);
const pgRun = await load(port, MEASURE_S);
const pgCpu = cpuPerRequestUs(cpuSpent(pgCpuBefore, cpuNow(pgServer)), pgRun.requests.total);
await pgServer.stop();

log('bench: 6/6 Redis Cluster beside single Redis (alternating rounds, writer paused)');
// A failure of this last phase (a cluster that would not form on a starved machine) is recorded, and the
// figures of the others still written.
const clusterFigures = await clusterPhase(CLUSTER_ROUNDS, Math.max(1, Math.round(MEASURE_S / 2))).catch(
  (error: unknown) => ({
    error: String(error).slice(0, 2_000),
  }),
);

const ceilingRps = ceiling?.requests.average ?? 0;
// The shipped configuration's latency: the tail's `after` variant when it ran, else `before`.
const shipped = tail.variants['after'] ?? tail.variants['before'] ?? Object.values(tail.variants)[0]!;
const results = {
  cpuCount: cpus().length,
  nodeVersion: process.version,
  measureSeconds: MEASURE_S,
  users: USERS,
  machine: startedMachine(),
  ceilingRps: round(ceilingRps, 0),
  hotPathRps: round(hotRun.requests.average, 0),
  ratioToCeiling: round(hotRun.requests.average / ceilingRps),
  // Writer paused, alternating rounds with the floor (so the ratio compares like with like).
  hotPathRpsWriterPaused: floor.hotPathRps,
  ratioToCeilingWriterPaused: round(floor.hotPathRps / ceilingRps),
  floorRps: floor.floorRps,
  ratioToFloor: floor.ratioToFloor,
  p50Ms: shipped.latencyMs.p50,
  p99Ms: shipped.latencyMs.p99,
  p999Ms: shipped.latencyMs.p999,
  fixedRateRps: FIXED_RATE,
  fixedRateMaxMs: shipped.latencyMs.max,
  postgresOnlyRps: round(pgRun.requests.average, 0),
  ratioToPostgresOnly: round(hotRun.requests.average / pgRun.requests.average),
  redisRoundTripsPerDecision: decisionsInRedis > 0 ? round(trips / decisionsInRedis, 3) : -1,
  decisionsInFullSpeedRun: decisions,
  hotPathFallbacks: fallbacks,
  ledgerLagMsMax: Math.round(ledgerLagMsMax),
  ledgerCatchUpMsAfterFullSpeed: ledgerCatchUpMs,
  ledgerDrainMsAfterPausedRun: pausedBacklogDrainMs,
  // Where each run's CPU went, per request (µs; from /proc): explains the ratios on a shared machine.
  cpuUsPerRequest: {
    ceiling: ceilingCpu,
    hotPath: hotCpu,
    hotPathWriterPaused: floor.cpuUsPerRequest.hotPath,
    floor: floor.cpuUsPerRequest.floor,
    postgresOnly: pgCpu,
  },
  floorPhase: floor,
  tail,
  // The hot path on a private 3-primary Redis Cluster beside a private single Redis, same persistence.
  cluster: clusterFigures,
};
mkdirSync('bench', { recursive: true });
writeFileSync('bench/results.json', `${JSON.stringify(results, null, 2)}\n`);
log('');
log(
  `| measure | value | (${results.cpuCount} CPUs, Node ${results.nodeVersion}, ${MEASURE_S} s runs, 64 connections; load average ${results.machine.loadAverage1m.join(' → ')}, CPU pressure ${results.machine.cpuPressureSomeShare})`,
);
log('| --- | --- |');
log(`| ceiling (bare Hono) | ${results.ceilingRps} req/s |`);
log(
  `| architecture floor (signature + parse + one EVALSHA reserve-and-append), writer paused | ${results.floorRps} req/s |`,
);
log(
  `| hot path, writer paused (alternating rounds with the floor) | ${results.hotPathRpsWriterPaused} req/s (**${results.ratioToFloor} × floor**, ${results.ratioToCeilingWriterPaused} × ceiling; backlog written in ${results.ledgerDrainMsAfterPausedRun} ms after) |`,
);
log(
  `| hot path, 10,000 users, ledger writer draining alongside | ${results.hotPathRps} req/s (${results.ratioToCeiling} × ceiling) |`,
);
log(
  `| latency at ${FIXED_RATE} req/s, open loop, writer alongside (${shipped.variant.name}) | p50 ${results.p50Ms} ms, p99 ${results.p99Ms} ms, p99.9 ${results.p999Ms} ms |`,
);
log(`| Postgres only | ${results.postgresOnlyRps} req/s (hot path ${results.ratioToPostgresOnly} ×) |`);
log(
  `| Redis round trips per decision made in Redis | ${results.redisRoundTripsPerDecision} (${results.hotPathFallbacks} of ${results.decisionsInFullSpeedRun} fell back to Postgres) |`,
);
log(
  `| ledger writer lag (max) | ${results.ledgerLagMsMax} ms (fixed-rate and full-speed phases; caught up ${results.ledgerCatchUpMsAfterFullSpeed} ms after) |`,
);
log(`| CPU µs per request | ${JSON.stringify(results.cpuUsPerRequest)} |`);
printTail();
if ('error' in clusterFigures) log(`bench: the cluster phase failed: ${clusterFigures.error}`);
else printCluster(clusterFigures);
log('bench: wrote bench/results.json');
process.exit(0);
