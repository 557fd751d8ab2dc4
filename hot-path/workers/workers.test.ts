// Proves HOT_PATH_WORKERS: `hot-path/main.ts` started as `npm run start:hot-path` does, with 3 worker processes on one port against the run's Redis (the Cluster under TEST_REDIS=cluster) through the suite's PgBouncer as credana_hot_path, approves exactly the credit of 200 parallel signed swipes on one user (holds = approvals; a swipe a starved machine declines system_unavailable is safe, and more are sent until the credit runs out), serving them from more than one worker (the primary's merged /metrics, label worker); a worker killed with SIGKILL mid-traffic is replaced in its slot and every approval stands (hold = approvals after the dropped requests are sent again); SIGTERM drains every worker and the primary exits 0; a pool budget over the role's PgBouncer pool, and workers that cannot start, exit non-zero with one line.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { redisEnv, type TestServices } from '../../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { setUpServicesWithWeth, testConfig, WETH_PRICE_E8 } from '../../test/support/hot-path.ts';
import { type ServiceProcess, spawnService } from '../../test/support/processes.ts';
import { authorizationRequest, sign, TEST_WEBHOOK_SECRET } from '../../test/support/stripe.ts';
import { mergeExpositions } from './merge-metrics.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const AMOUNT = 1_000;
const WORKERS = 3;
// Atomicity, not latency, is under test: generous budgets keep a busy machine's slow answers from
// turning into fallbacks.
const RELAXED = {
  VELOCITY_LIMIT_PER_MIN: '10000',
  DECISION_BUDGET_MS: '1900',
  REDIS_COMMAND_TIMEOUT_MS: '1500',
  REDIS_DECISION_BUDGET_MS: '1500',
};
// Starting Node and tsx four times over on a busy two-core machine.
const PROCESS_TIMEOUT_MS = 240_000;
// Traffic, a worker's replacement starting (Node, tsx, Redis, Postgres) and more traffic, at load 40.
const KILL_TEST_TIMEOUT_MS = 480_000;

let services: TestServices;
let hotPath: ServiceProcess;

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATABASE_URL: testConfig(services).DATABASE_URL,
    ...redisEnv(services),
    REDIS_KEY_PREFIX: services.prefix,
    STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
    HOT_PATH_PORT: '0',
    HOT_PATH_METRICS_PORT: '0',
    HOT_PATH_WORKERS: String(WORKERS),
    // The suite's PgBouncer gives each (database, role) 10 server connections (global-setup.ts): three
    // workers of 3 fit, three of 10 would not (the refusal below).
    DATABASE_POOL_MAX: '3',
    PGBOUNCER_ROLE_POOL_SIZE: '10',
    ...RELAXED,
    ...extra,
  };
}

/** The `hot-path …` lines of the primary: its port, its internal listener, each worker's pid per slot. */
function announced(output: string) {
  const port = Number(/hot-path ready on http:\/\/[^:]+:(\d+)/.exec(output)?.[1]);
  const internal = /hot-path metrics on (http:\/\/[^\s]+)/.exec(output)?.[1] ?? '';
  const workers = [...output.matchAll(/hot-path worker (\d+) pid (\d+) listening/g)].map((m) => ({
    slot: Number(m[1]),
    pid: Number(m[2]),
  }));
  return { url: `http://127.0.0.1:${port}`, internal, workers };
}

interface Answer {
  approved: boolean;
  metadata: { reason: string };
}

/**
 * A connection the primary was handing to a worker as it died is never answered (node:cluster sends the
 * socket to the worker and waits for its reply): the client gives up after this long, as Stripe does
 * after 2 s. Far above any answer of a live worker on a starved machine (budget 1.9 s).
 */
const ANSWER_TIMEOUT_MS = 30_000;

/**
 * Posts one signed request body, signing it again on each attempt. With `attemptsMax` > 1, a request
 * whose connection was dropped or never answered is sent again (as a proxy in front of the hot path
 * would); any answer, whatever it says, is final.
 */
async function post(url: string, raw: string, attemptsMax = 1): Promise<Answer> {
  for (let attempt = 1; ; attempt++) {
    let response: Response;
    try {
      response = await fetch(`${url}/stripe/authorizations`, {
        method: 'POST',
        body: raw,
        headers: { 'content-type': 'application/json', 'stripe-signature': sign(raw) },
        signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
      });
    } catch (error) {
      // fetch's TypeError: the connection failed or was reset; TimeoutError: never answered.
      const dropped = error instanceof TypeError || (error as Error).name === 'TimeoutError';
      if (attempt >= attemptsMax || !dropped) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
      continue;
    }
    expect(response.status).toBe(200);
    return (await response.json()) as Answer;
  }
}

/** Sum of a counter's samples per `worker` label in an exposition. */
function perWorker(metrics: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const worker = /worker="([^"]+)"/.exec(line)?.[1] ?? '';
    out.set(worker, (out.get(worker) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return out;
}

async function userCovering(swipes: number) {
  return seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(BigInt(swipes * AMOUNT), WETH_PRICE_E8) }],
    creditLimitCents: 10_000_000n,
  });
}

const holdOf = async (userId: string) =>
  Number((await services.redis.hget(userKeys(services.prefix, userId).account, 'hold')) ?? 0);

/** Decisions per worker slot so far, from the primary's merged /metrics. */
async function decisionsPerWorker(internal: string): Promise<Map<string, number>> {
  return perWorker(await (await fetch(`${internal}/metrics`)).text(), 'credana_decisions_total');
}

/**
 * $0 verifications on the card, a few at once (so node:cluster hands their connections to different
 * workers), until every worker has decided one: each worker has caches of its own (card owner, account
 * snapshot), and a burst on cold caches measures a cold start on a busy machine, not atomicity.
 */
async function warmUp(url: string, internal: string, cardId: string): Promise<void> {
  for (let batch = 0; batch < 50; batch++) {
    const decided = await decisionsPerWorker(internal);
    if (Array.from({ length: WORKERS }, (_, i) => decided.get(String(i)) ?? 0).every((n) => n > 0)) return;
    const answers = await Promise.all(
      Array.from({ length: WORKERS * 2 }, () =>
        post(url, JSON.stringify(authorizationRequest({ cardId, amountCents: 0 }))),
      ),
    );
    for (const answer of answers) expect(answer.approved).toBe(true);
  }
  throw new Error('not every worker decided a warm-up verification in 50 batches');
}

/** For a failure message: every non-zero fallback, Redis failure and budget overrun, per worker. */
async function whyNot(internal: string): Promise<string> {
  const text = await (await fetch(`${internal}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) =>
      /^credana_(decision_fallbacks|decision_redis_failures|decision_budget_exceeded|redis_lease_events)_total\{/.test(
        line,
      ),
    )
    .filter((line) => !line.endsWith(' 0'))
    .join('\n');
}

/**
 * Every answer approved, or declined for want of credit — or `system_unavailable`: on a starved machine
 * a swipe may run out of its budget, and that decline is safe (nothing held). Anything else is a bug.
 */
function expectOnlyDeclinesOfLoad(answers: Answer[]): void {
  const reasons = Object.keys(tally(answers));
  expect(
    reasons.filter((r) => !['approved', 'insufficient_credit', 'system_unavailable'].includes(r)),
  ).toEqual([]);
}

/**
 * Atomicity is proven once the credit has run out: some swipe was declined `insufficient_credit`. A
 * burst that a starved machine answered partly `system_unavailable` may not have got there; more
 * parallel swipes are then sent (added to `answers`) until one is.
 */
async function untilCreditReached(url: string, cardId: string, answers: Answer[]): Promise<void> {
  for (let burst = 0; burst < 20 && tally(answers)['insufficient_credit'] === undefined; burst++) {
    answers.push(
      ...(await Promise.all(
        Array.from({ length: 20 }, () =>
          post(url, JSON.stringify(authorizationRequest({ cardId, amountCents: AMOUNT }))),
        ),
      )),
    );
  }
  expectOnlyDeclinesOfLoad(answers);
  expect(tally(answers)['insufficient_credit']).toBeGreaterThan(0);
}

const tally = (answers: Answer[]) => {
  const reasons: Record<string, number> = {};
  for (const a of answers) reasons[a.metadata.reason] = (reasons[a.metadata.reason] ?? 0) + 1;
  return reasons;
};

beforeAll(async () => {
  services = await setUpServicesWithWeth();
  // Three workers start at once (each Node, tsx, Redis, Postgres): on a starved machine, minutes.
  hotPath = await spawnService('hot-path/main.ts', env(), 'hot-path ready', { startTimeoutMs: 200_000 });
}, PROCESS_TIMEOUT_MS);

afterAll(async () => {
  await hotPath?.kill('SIGKILL');
  await services?.close();
});

describe('HOT_PATH_WORKERS=3: one port, three worker processes, one Redis', () => {
  it('approves exactly the credit of 200 parallel swipes on one user, from more than one worker', async () => {
    const { url, internal, workers } = announced(hotPath.output());
    expect(new Set(workers.map((w) => w.slot))).toEqual(new Set([0, 1, 2]));
    expect(new Set(workers.map((w) => w.pid)).size).toBe(WORKERS);
    const { userId, cardId } = await userCovering(50);
    await warmUp(url, internal, cardId);
    const before = await decisionsPerWorker(internal);
    const answers = await Promise.all(
      Array.from({ length: 200 }, () =>
        post(url, JSON.stringify(authorizationRequest({ cardId, amountCents: AMOUNT }))),
      ),
    );
    const reasons = tally(answers);
    await untilCreditReached(url, cardId, answers);
    expect(tally(answers)['approved'], `${JSON.stringify(reasons)}\n${await whyNot(internal)}`).toBe(50);
    expect(await holdOf(userId)).toBe(50 * AMOUNT);
    // Which worker decided what: the primary's merged exposition, one series per worker.
    const after = await decisionsPerWorker(internal);
    const decided = [...after].map(([worker, n]) => [worker, n - (before.get(worker) ?? 0)] as const);
    expect(decided.reduce((a, [, n]) => a + n, 0)).toBe(answers.length);
    const serving = decided.filter(([worker, n]) => worker !== 'primary' && n > 0);
    expect(serving.length, JSON.stringify(decided)).toBeGreaterThan(1);
    const ready = await fetch(`${internal}/readyz`);
    expect(ready.status).toBe(200);
    const body = (await ready.json()) as { workers: { worker: number; pid: number; ready: boolean }[] };
    expect(body.workers.map((w) => w.pid).sort()).toEqual(workers.map((w) => w.pid).sort());
  }, 120_000);

  it(
    'replaces a worker killed with SIGKILL mid-traffic, and no approval is lost',
    async () => {
      const { url, internal, workers } = announced(hotPath.output());
      const victim = workers.find((w) => w.slot === 1);
      expect(victim).toBeDefined();
      const { userId, cardId } = await userCovering(50);
      await warmUp(url, internal, cardId);
      // 300 distinct authorizations, 16 in flight at a time; after the first 60 answers one worker dies.
      const bodies = Array.from({ length: 300 }, () =>
        JSON.stringify(authorizationRequest({ cardId, amountCents: AMOUNT })),
      );
      const answers: Answer[] = [];
      let next = 0;
      let killed = false;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < bodies.length) {
            const raw = bodies[next++] as string;
            // A request the dead worker dropped is sent again with the same authorization: the decision it
            // may already have made in Redis is answered from its idempotency record, not made twice.
            answers.push(await post(url, raw, 20));
            if (!killed && answers.length >= 60) {
              killed = true;
              process.kill(victim?.pid as number, 'SIGKILL');
            }
          }
        }),
      );
      expect(killed).toBe(true);
      const reasons = tally(answers);
      await untilCreditReached(url, cardId, answers);
      expect(tally(answers)['approved'], `${JSON.stringify(reasons)}\n${await whyNot(internal)}`).toBe(50);
      expect(await holdOf(userId)).toBe(50 * AMOUNT);
      // Its slot has a worker again: a new pid, listening on the same port, deciding.
      const until = Date.now() + 120_000;
      let replacement: number | undefined;
      while (replacement === undefined && Date.now() < until) {
        replacement = announced(hotPath.output())
          .workers.filter((w) => w.slot === 1)
          .map((w) => w.pid)
          .find((pid) => pid !== victim?.pid);
        if (replacement === undefined) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(replacement, hotPath.output().slice(-2_000)).toBeDefined();
      const again = await Promise.all(
        Array.from({ length: 60 }, () =>
          post(url, JSON.stringify(authorizationRequest({ cardId, amountCents: AMOUNT }))),
        ),
      );
      expect(tally(again)['approved']).toBeUndefined();
      expectOnlyDeclinesOfLoad(again);
      const metrics = await (await fetch(`${internal}/metrics`)).text();
      expect(perWorker(metrics, 'credana_decisions_total').get('1') ?? 0).toBeGreaterThan(0);
      expect(perWorker(metrics, 'credana_hot_path_worker_restarts_total').get('primary')).toBe(1);
      expect(await holdOf(userId)).toBe(50 * AMOUNT);
    },
    KILL_TEST_TIMEOUT_MS,
  );

  it('drains every worker on SIGTERM, and the primary exits 0', async () => {
    const pids = announced(hotPath.output()).workers.map((w) => w.pid);
    const exited = new Promise<number | null>((resolve) => hotPath.child.once('exit', resolve));
    hotPath.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const pid of pids) expect(alive(pid), `worker pid ${pid}`).toBe(false);
  }, 60_000);
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts main.ts with exactly `environment` and waits for it to exit; its status and output. */
function runToExit(environment: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'hot-path/main.ts'], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'] ?? '', ...environment },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('refusals', () => {
  it('exits 78 with one line when the workers’ pools exceed the role’s PgBouncer pool', async () => {
    const outcome = await runToExit(env({ DATABASE_POOL_MAX: '4' }));
    expect(outcome.code, outcome.out).toBe(78);
    expect(outcome.out).toMatch(
      /^config: HOT_PATH_WORKERS \(3\) × DATABASE_POOL_MAX \(4\) = 12 Postgres connections, more than PGBOUNCER_ROLE_POOL_SIZE \(10\)[^\n]*\n$/,
    );
  }, 60_000);

  it(
    'exits 1 when a worker keeps dying before it listens (Redis unreachable)',
    async () => {
      const outcome = await runToExit(
        env({ HOT_PATH_WORKERS: '2', REDIS_URL: 'redis://127.0.0.1:1', REDIS_CLUSTER_NODES: '' }),
      );
      expect(outcome.code, outcome.out.slice(-2_000)).toBe(1);
      expect(outcome.out).toMatch(
        /hot-path: worker [01] died 3 times in a row before listening, giving up\n/,
      );
      expect(outcome.out).not.toContain('hot-path ready');
    },
    PROCESS_TIMEOUT_MS,
  );

  it('PGBOUNCER_ROLE_POOL_SIZE defaults to the default_pool_size production PgBouncer gives each role', () => {
    const ini = readFileSync(path.join(ROOT, 'deploy/pgbouncer/pgbouncer.ini'), 'utf8');
    const poolSize = Number(/^default_pool_size\s*=\s*(\d+)/m.exec(ini)?.[1]);
    expect(loadConfig({ NODE_ENV: 'test' }).PGBOUNCER_ROLE_POOL_SIZE).toBe(poolSize);
    // And the shipped settings fit it: one hot path per pod at the deployed pool size.
    const deployed = loadConfig({ NODE_ENV: 'test', DATABASE_POOL_MAX: '10' });
    expect(deployed.HOT_PATH_WORKERS * deployed.DATABASE_POOL_MAX).toBeLessThanOrEqual(poolSize);
  });
});

describe('the merged exposition', () => {
  it('labels each worker’s samples and writes each family once, histograms kept whole', () => {
    const worker = (n: number) =>
      [
        '# HELP credana_decisions_total Decisions',
        '# TYPE credana_decisions_total counter',
        `credana_decisions_total{outcome="approved",service="hot-path"} ${n}`,
        '',
        '# HELP credana_latency_seconds Latency',
        '# TYPE credana_latency_seconds histogram',
        `credana_latency_seconds_bucket{le="0.1"} ${n}`,
        `credana_latency_seconds_sum ${n / 10}`,
        `credana_latency_seconds_count ${n}`,
        '',
      ].join('\n');
    const merged = mergeExpositions([
      { worker: '0', text: worker(2) },
      { worker: '1', text: worker(5) },
    ]);
    expect(merged).toBe(
      [
        '# HELP credana_decisions_total Decisions',
        '# TYPE credana_decisions_total counter',
        'credana_decisions_total{worker="0",outcome="approved",service="hot-path"} 2',
        'credana_decisions_total{worker="1",outcome="approved",service="hot-path"} 5',
        '# HELP credana_latency_seconds Latency',
        '# TYPE credana_latency_seconds histogram',
        'credana_latency_seconds_bucket{worker="0",le="0.1"} 2',
        'credana_latency_seconds_sum{worker="0"} 0.2',
        'credana_latency_seconds_count{worker="0"} 2',
        'credana_latency_seconds_bucket{worker="1",le="0.1"} 5',
        'credana_latency_seconds_sum{worker="1"} 0.5',
        'credana_latency_seconds_count{worker="1"} 5',
        '',
      ].join('\n'),
    );
  });
});
