// Proves one decision, one answer across deciders (issue 15 findings 2 and 9) with real hot-path
// processes, real Postgres and Redis, and a TCP proxy the test stalls (bytes stop, connections stay):
// a stalled Redis hands over to the fallback inside the budget; a process cut off from Redis never
// grants the credit a healthy peer is granting; a fallback grant outlives the process that made it and
// is seen by every later Redis decision; the fallback is capped per user per outage.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeys } from '../shared/redis/keys.ts';
import { conservationProblems } from '../test/support/conservation.ts';
import type { TestServices } from '../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../test/support/fixtures.ts';
import { setUpServicesWithWeth, testConfig } from '../test/support/hot-path.ts';
import { freePort, type ServiceProcess, spawnService } from '../test/support/processes.ts';
import { drainOutbox } from '../test/support/reconcile.ts';
import { authorizationRequest, sign, TEST_WEBHOOK_SECRET } from '../test/support/stripe.ts';
import { startTcpProxy } from '../test/support/tcp-proxy.ts';

const PRICE = 300_000_000_000n;
let services: TestServices;

beforeAll(async () => {
  services = await setUpServicesWithWeth();
});

afterAll(async () => {
  await services?.close();
});

interface Answer {
  status: number;
  approved: boolean;
  amount?: number;
  reason: string;
  elapsedMs: number;
}

async function swipe(
  port: number,
  cardId: string,
  amountCents: number,
  extra: { authorizationId?: string; controllable?: boolean } = {},
): Promise<Answer> {
  const event = authorizationRequest({ cardId, amountCents, ...extra });
  const raw = JSON.stringify(event);
  const started = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}/stripe/authorizations`, {
    method: 'POST',
    body: raw,
    headers: { 'content-type': 'application/json', 'stripe-signature': sign(raw) },
  });
  const json = (await res.json()) as { approved: boolean; amount?: number; metadata: { reason: string } };
  return {
    status: res.status,
    approved: json.approved,
    ...(json.amount === undefined ? {} : { amount: json.amount }),
    reason: json.metadata.reason,
    elapsedMs: performance.now() - started,
  };
}

/** What an answer granted: the partial amount, the requested amount, or nothing. */
function granted(answer: Answer, requested: number): number {
  if (!answer.approved) return 0;
  return answer.amount ?? requested;
}

const METRICS_TOKEN = `metrics_${'d5'.repeat(16)}`;

/** A hot-path process on this file's database, reaching Redis at `redisUrl` (direct or through a proxy). */
async function hotPathProcess(redisUrl: string, extra: Record<string, string> = {}) {
  const port = await freePort();
  const config = testConfig(services);
  const env = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATABASE_URL: config.DATABASE_URL,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: services.prefix,
    STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
    VELOCITY_LIMIT_PER_MIN: '10000',
    // A 400 ms decision of which the Redis attempt may take 150 ms: the stalled-Redis hand-over is what is
    // under test, and a fallback on a busy 2-core CI machine (a first transaction in a new process) can
    // need more than the 135 ms that the default 250 ms Redis budget leaves (seen once under the full
    // suite; docs/hot-path.md, "Fallback and failure").
    DECISION_BUDGET_MS: '400',
    REDIS_COMMAND_TIMEOUT_MS: '150',
    REDIS_DECISION_BUDGET_MS: '150',
    ...extra,
    HOT_PATH_PORT: String(port),
    // /metrics on the public port needs the token (the internal listener is not used here).
    METRICS_TOKEN,
  };
  const process = await spawnService('hot-path/main.ts', env, 'hot-path ready');
  return { port, process };
}

async function metric(port: number, pattern: RegExp): Promise<number> {
  const text = await (
    await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
  ).text();
  const match = pattern.exec(text);
  return match === null ? 0 : Number(match[1]);
}

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`not reached in ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const redisPort = () => Number(new URL(services.redisUrl).port || 6379);

/** Waits until a count query (`select count(*)::int as n …`) answers 0. */
async function untilNone(query: () => Promise<{ n: number }[]>, what: string): Promise<void> {
  await until(async () => (await query())[0]?.n === 0, what);
}

describe('deciders', () => {
  it('hands a stalled Redis over to the Postgres fallback inside the budget', async () => {
    // The process has never seen the card: a cold decision needs several Redis round trips, each of
    // which would wait for the command timeout on a stalled connection.
    const proxy = await startTcpProxy(redisPort());
    // A command timeout as long as the decision budget allows (1,880 ms of 1,900): waiting for it would
    // leave the fallback 20 ms, so only the Redis attempt's own budget (150 ms) hands over in time. The
    // long decision budget keeps a loaded machine's slow fallback inside it: no answer here is timed.
    const { port, process } = await hotPathProcess(proxy.url('redis'), {
      DECISION_BUDGET_MS: '1900',
      REDIS_COMMAND_TIMEOUT_MS: '1880',
    });
    try {
      const { cardId } = await seedUser(services.database.sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
      });
      proxy.stall();
      const answers: Answer[] = [];
      for (let i = 0; i < 10; i++) answers.push(await swipe(port, cardId, 1_000));
      expect(answers.map((a) => `${a.approved}:${a.reason}`)).toEqual(
        Array.from({ length: 10 }, () => 'true:approved'),
      );
      // Every answer came from the fallback (past its deadline the engine would have declined
      // system_unavailable instead).
      expect(await metric(port, /credana_decision_fallbacks_total\{result="postgres"[^}]*\} (\d+)/)).toBe(10);
    } finally {
      proxy.resume();
      await process.kill('SIGTERM');
      await proxy.close();
    }
  });

  it('never lets a process cut off from Redis grant the credit a healthy peer grants', async () => {
    const proxy = await startTcpProxy(redisPort());
    const healthy = await hotPathProcess(services.redisUrl);
    const cutOff = await hotPathProcess(proxy.url('redis'));
    const processes = [healthy.process, cutOff.process];
    try {
      const available = 10_000;
      const { userId, cardId } = await seedUser(services.database.sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(BigInt(available), PRICE) }],
      });
      // Warm both: card owner and account snapshot known, so the cut-off process's Redis attempt is
      // one round trip that hangs, and its fallback has most of the budget.
      for (const p of [healthy.port, cutOff.port])
        expect(await swipe(p, cardId, 0)).toMatchObject({ approved: true, reason: 'approved' });
      proxy.stall();
      // Both decide for the same user at once; no ledger writer runs, so Postgres sees none of the
      // healthy process's Redis holds — exactly what a fallback would be blind to.
      const amount = 1_000;
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) => swipe(i % 2 === 0 ? healthy.port : cutOff.port, cardId, amount)),
      );
      const total = answers.reduce((sum, a) => sum + granted(a, amount), 0);
      expect(total).toBeLessThanOrEqual(available);
      // The healthy process kept approving from Redis; the cut-off one declined, fenced.
      const fromHealthy = answers.filter((_, i) => i % 2 === 0);
      expect(fromHealthy.filter((a) => a.approved).length).toBe(10);
      const fromCutOff = answers.filter((_, i) => i % 2 === 1);
      expect(fromCutOff.every((a) => !a.approved && a.reason === 'system_unavailable')).toBe(true);
      // Each of its 15 went to the fallback and was fenced there — or, on a machine too busy for the
      // fallback to answer inside the budget (CI, 2026-12-07: 7 fenced, 8 past the deadline), declined
      // without one. None was decided from Postgres.
      const fallbackResult = (result: string) =>
        metric(
          cutOff.port,
          new RegExp(`credana_decision_fallbacks_total\\{result="${result}"[^}]*\\} (\\d+)`),
        );
      const fenced = await fallbackResult('fenced');
      expect(fenced).toBeGreaterThan(0);
      expect(fenced + (await fallbackResult('declined'))).toBe(15);
      expect(await fallbackResult('postgres')).toBe(0);

      proxy.resume();
      await drainOutbox(services.redis, services.database.sql, services.prefix);
      expect(
        await conservationProblems(services.database.sql, services.redis, services.prefix, [userId]),
      ).toEqual([]);
    } finally {
      proxy.resume();
      await Promise.all(processes.map((p) => p.kill('SIGTERM')));
      await proxy.close();
    }
  });

  it("adopts a dead process's fallback grant before any Redis decision sees the account", async () => {
    const proxyA = await startTcpProxy(redisPort());
    const proxyB = await startTcpProxy(redisPort());
    const a = await hotPathProcess(proxyA.url('redis'));
    let b: ServiceProcess | null = null;
    const bProcess = await hotPathProcess(proxyB.url('redis'));
    b = bProcess.process;
    try {
      const { userId, cardId } = await seedUser(services.database.sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(10_000n, PRICE) }],
      });
      for (const p of [a.port, bProcess.port]) expect((await swipe(p, cardId, 0)).approved).toBe(true);
      // Redis stalls for everyone (a failover in progress). Once the leases have lapsed, B's fallback
      // may grant: nobody decides from Redis.
      proxyA.stall();
      proxyB.stall();
      await untilNone(
        () =>
          services.database
            .sql`select count(*)::int as n from redis_deciders where expires_at > clock_timestamp()`,
        'every Redis lease lapsed',
      );
      const fallbackGrant = await swipe(bProcess.port, cardId, 6_000, { authorizationId: 'iauth_dead_b' });
      expect(fallbackGrant).toMatchObject({ approved: true, reason: 'approved' });
      // B dies before it could adopt its grant into Redis (the partition drops what it had sent since);
      // Redis comes back.
      proxyB.cut();
      await b.kill('SIGKILL');
      b = null;
      proxyA.resume();
      proxyB.resume();
      await untilNone(
        () =>
          services.database.sql`select count(*)::int as n from fallback_decisions where adopted_at is null`,
        'the fallback grant adopted',
      );
      // A's Redis decisions now count B's hold: 6,000 more would exceed the 10,000 available.
      const after = await swipe(a.port, cardId, 6_000);
      expect(after).toMatchObject({ approved: false, reason: 'insufficient_credit' });
      expect(await services.redis.hget(userKeys(services.prefix, userId).holds, 'iauth_dead_b')).toBe('6000');
      expect((await swipe(a.port, cardId, 4_000)).approved).toBe(true);
      await drainOutbox(services.redis, services.database.sql, services.prefix);
      expect(
        await conservationProblems(services.database.sql, services.redis, services.prefix, [userId]),
      ).toEqual([]);
    } finally {
      proxyA.resume();
      proxyB.resume();
      await Promise.all([a.process.kill('SIGTERM'), b?.kill('SIGTERM')]);
      await Promise.all([proxyA.close(), proxyB.close()]);
    }
  });

  it('caps what the fallback grants one user until Redis is back', async () => {
    const proxy = await startTcpProxy(redisPort());
    const { port, process } = await hotPathProcess(proxy.url('redis'), { FALLBACK_GRANT_CENTS_MAX: '5000' });
    let tornDown = false;
    try {
      const { userId, cardId } = await seedUser(services.database.sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
      });
      expect((await swipe(port, cardId, 0)).approved).toBe(true);
      proxy.stall();
      const first = await swipe(port, cardId, 3_000);
      const second = await swipe(port, cardId, 3_000);
      const partial = await swipe(port, cardId, 3_000, { controllable: true });
      const capped = await swipe(port, cardId, 1);
      expect(
        [first, second, partial, capped].map((a) => `${a.approved}:${a.reason}:${a.amount ?? ''}`),
      ).toEqual(['true:approved:', 'false:fallback_limit:', 'true:partial:2000', 'false:fallback_limit:']);
      // Redis back: the grants are adopted, the cap starts again for the next outage.
      proxy.resume();
      await untilNone(
        () =>
          services.database
            .sql`select count(*)::int as n from fallback_decisions where user_id = ${userId} and adopted_at is null`,
        'the fallback decisions adopted',
      );
      expect(await services.redis.hget(userKeys(services.prefix, userId).account, 'hold')).toBe('5000');
      expect((await swipe(port, cardId, 3_000)).approved).toBe(true);
      await process.kill('SIGTERM');
      tornDown = true;
      await drainOutbox(services.redis, services.database.sql, services.prefix);
      expect(
        await conservationProblems(services.database.sql, services.redis, services.prefix, [userId]),
      ).toEqual([]);
    } finally {
      proxy.resume();
      if (!tornDown) await process.kill('SIGTERM');
      await proxy.close();
    }
  });
});
