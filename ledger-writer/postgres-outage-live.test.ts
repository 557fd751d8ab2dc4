// Proves issue 4 with live traffic and real processes: while a private PostgreSQL cluster is down for
// OUTAGE_MS (pg_ctl stop -m immediate), a hot-path process keeps answering signed Stripe authorization
// webhooks from Redis within the decision budget (approvals, partials and declines, Stripe's replays,
// lifecycle events), the outbox streams grow and a ledger-writer process retries without acknowledging;
// once Postgres is back the writer catches up, and every answered decision and applied event is in
// Postgres exactly once, with balances equal to Redis and to what the answers granted, and an intact
// audit chain. The shared Postgres is never touched; Redis is the shared one under a private prefix.
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDatabase, type Database } from '../shared/db/client.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { warmAccounts } from '../shared/redis/account.ts';
import { createRedis, type Redis } from '../shared/redis/client.ts';
import { ACCOUNT, deadLetterKey, userKeys } from '../shared/redis/keys.ts';
import { conservationProblems } from '../test/support/conservation.ts';
import { asRole, deletePrefix, redisEnv } from '../test/support/db.ts';
import { redisClusterNodes, redisUrl } from '../test/support/env.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import type { ResponseBody } from '../test/support/hot-path.ts';
import {
  type PostgresCluster,
  type ServiceProcess,
  spawnService,
  startPostgresCluster,
} from '../test/support/processes.ts';
import {
  authorizationEvent,
  authorizationRequest,
  sign,
  TEST_WEBHOOK_SECRET,
  transactionEvent,
} from '../test/support/stripe.ts';
import { outboxBacklog } from './testing.ts';

/** How long Postgres stays down: the 30 s. */
const OUTAGE_MS = 30_000;
/** Live traffic before the outage (every user's card and account are warm by then) and after it. */
const BEFORE_OUTAGE_MS = 4_000;
const AFTER_OUTAGE_MS = 8_000;
/** Authorization requests per second, Stripe's replays included; lifecycle events come on top. */
const RATE_PER_S = 60;
/** Share of requests that re-send an earlier, answered request (Stripe retrying). */
const REPLAY_SHARE = 0.05;
/** Share of approvals followed by `issuing_authorization.created`; of those, share then captured (half). */
const CREATED_SHARE = 0.12;
const CAPTURE_SHARE = 0.5;
/** Share of lifecycle events that Stripe delivers a second time. */
const LIFECYCLE_REPLAY_SHARE = 0.25;
/** The hot path's default budget (DECISION_BUDGET_MS): every answer, measured by the caller, within it. */
const BUDGET_MS = 400;
/** Stripe's deadline for an authorization answer, after which it applies the default decision. */
const STRIPE_DEADLINE_MS = 2_000;
/**
 * Bound on the writer's catch-up once Postgres is back. Its own retry backoff is capped at 5 s, but the
 * driver (postgres.js) also delays each pooled connection's reconnect by up to 20 s after many failures.
 */
const CATCH_UP_MAX_MS = 30_000;
const MONITOR_INTERVAL_MS = 250;
const PRICE = 300_000_000_000n;

type UserKind = 'rich' | 'poor' | 'broke';
interface TestUser {
  kind: UserKind;
  userId: string;
  cardId: string;
}

/** One request sent to the hot path and what came back. */
interface Exchange {
  kind: 'request' | 'replay' | 'created' | 'capture' | 'lifecycle-replay';
  eventId: string;
  sentAtMs: number;
  status: number;
  latencyMs: number;
  body: ResponseBody;
  error: string | null;
}

/** A new authorization request and its first answer. */
interface Authorization {
  user: TestUser;
  eventId: string;
  authorizationId: string;
  createdS: number;
  raw: string;
  answer: ResponseBody | null;
  grantedCents: number;
}

/** What the test saw of the outbox and the writer at one instant. */
interface Sample {
  atMs: number;
  outbox: number;
  writerState: string;
  writerBacklog: number;
  writerLagMs: number;
  retries: number;
}

let cluster: PostgresCluster | null = null;
let databaseUrl = '';
let database: Database | null = null;
let redis: Redis | null = null;
let hotPath: ServiceProcess | null = null;
let writer: ServiceProcess | null = null;
/** A writer being started again after it exited on its own (see startWriter). */
let writerRestart: Promise<void> = Promise.resolve();
let tearingDown = false;
let stopTraffic = false;
const inFlight = new Set<Promise<void>>();
const prefix = `tpo${Date.now().toString(36)}:`;

beforeAll(async () => {
  cluster = await startPostgresCluster();
  const url = new URL(cluster.url);
  url.pathname = '/credana';
  databaseUrl = url.toString();
  await ensureDatabase(databaseUrl);
  await migrateDatabase(databaseUrl);
  database = createDatabase({
    url: databaseUrl,
    poolMax: 4,
    connectTimeoutS: 1,
    applicationName: 'outage-test',
  });
  redis = createRedis({ url: redisUrl(), clusterNodes: redisClusterNodes() });
  await seedAsset(database.sql, redis, prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
});

afterAll(async () => {
  // Everything is torn down even when the test failed half-way (Postgres possibly still stopped).
  tearingDown = true;
  stopTraffic = true;
  await Promise.allSettled([...inFlight]);
  await writerRestart.catch(() => undefined);
  await Promise.allSettled([hotPath?.kill('SIGKILL'), writer?.kill('SIGKILL')]);
  if (redis !== null) {
    await deletePrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
  }
  await database?.close().catch(() => undefined);
  cluster?.destroy();
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Seeded pseudo-random numbers (mulberry32): runs share the traffic's mix and differ only by timing. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Sum of one metric's samples in Prometheus text whose labels contain `labels`. */
function metric(text: string, name: string, labels = ''): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match?.[1] === name && (match[2] ?? '').includes(labels)) total += Number(match[3]);
  }
  return total;
}

const outboxLength = () => outboxBacklog(redis!, prefix);

it('answers from Redis through a 30 s Postgres outage and the writer then books everything exactly once', {
  timeout: 180_000,
}, async () => {
  const sql = database!.sql;
  const rich = (n: number) =>
    Promise.all(
      Array.from({ length: n }, () =>
        seedUser(sql, {
          collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000_000n, PRICE) }],
        }),
      ),
    );
  const users: TestUser[] = [
    ...(await rich(4)).map((u) => ({ kind: 'rich' as const, ...u })),
    // $150 of credit: a few approvals, then a partial approval (controllable requests), then declines.
    {
      kind: 'poor',
      ...(await seedUser(sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(15_000n, PRICE) }],
      })),
    },
    // 50 cents of credit against requests of at least $1: every request is declined insufficient_credit.
    {
      kind: 'broke',
      ...(await seedUser(sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(50n, PRICE) }],
      })),
    },
  ];

  // The users' cached accounts (and the card index) are built before the hot path starts, as a deployment
  // has them (`npm run cache:warm`): this test is about an outage with warm caches. A burst of first
  // decisions on a cold cache rebuilds each account from Postgres inside the Redis attempt's budget;
  // on a starved CPU that can miss it, then the fallback too, and the answer is a decline
  // (system_unavailable) — the product's promise there is an answer in time, not a Redis approval.
  expect(await warmAccounts(redis!, sql, prefix)).toEqual({ users: users.length, installed: users.length });

  const common = {
    NODE_ENV: 'test',
    DATABASE_URL: databaseUrl,
    ...redisEnv({ redisUrl: redisUrl(), redisClusterNodes: redisClusterNodes() }),
    REDIS_KEY_PREFIX: prefix,
    STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
  };
  /** Exits of the writer that nobody asked for: each one fails the test (after everything else is checked). */
  const writerExits: { atMs: number; exit: string; output: string }[] = [];
  let writerUrl = '';
  // At info level the writer logs its metrics port once, and each retry while Postgres is down.
  // Each process as its own role, straight to the private cluster (it is stopped and started here).
  const writerEnv = {
    ...common,
    DATABASE_URL: asRole(databaseUrl, 'credana_ledger_writer'),
    LOG_LEVEL: 'info',
    LEDGER_WRITER_PORT: '0',
  };
  async function startWriter(): Promise<void> {
    const started = await spawnService('ledger-writer/main.ts', writerEnv, 'ledger writer metrics listening');
    writer = started;
    const port = /"port":(\d+)[^\n]*ledger writer metrics listening/.exec(started.output())![1];
    writerUrl = `http://127.0.0.1:${port}`;
    started.child.once('exit', (code, signal) => {
      if (tearingDown) return;
      writerExits.push({
        atMs: performance.now(),
        exit: String(code ?? signal),
        output: started.output().slice(-1_500),
      });
      // As a process supervisor would, start another writer, so the rest of the test still shows whether
      // anything was lost: what the dead one had not acked is still in the outbox, and the new writer
      // takes its shards once their leases lapse and claims it first.
      writerRestart = startWriter().catch((error: unknown) => {
        writerExits.push({ atMs: performance.now(), exit: 'restart failed', output: String(error) });
      });
    });
  }
  // Port 0 and the port each process reports: a port picked in advance can be taken by the time the
  // process listens (outgoing connections on this busy machine use the same range).
  const [hotPathProcess] = await Promise.all([
    spawnService(
      'hot-path/main.ts',
      {
        ...common,
        DATABASE_URL: asRole(databaseUrl, 'credana_hot_path'),
        LOG_LEVEL: 'silent',
        HOT_PATH_PORT: '0',
        DECISION_BUDGET_MS: String(BUDGET_MS),
        VELOCITY_LIMIT_PER_MIN: '10000',
      },
      'hot-path ready',
    ),
    startWriter(),
  ]);
  hotPath = hotPathProcess;
  const hotPathUrl = /hot-path ready on (http:\/\/[\d.]+:\d+)/.exec(hotPath.output())![1]!;
  const hotPathMetricsUrl = /hot-path metrics on (http:\/\/[\d.]+:\d+)/.exec(hotPath.output())![1]!;

  const exchanges: Exchange[] = [];
  const authorizations: Authorization[] = [];
  const answeredSoFar: Authorization[] = [];
  /** Replays whose answer differed from the first one (checked after the traffic, not inside it). */
  const replayMismatches: string[] = [];
  const lifecycleEvents = new Map<
    string,
    { kind: 'created' | 'capture'; user: TestUser; capturedCents: number }
  >();
  const rand = random(4);

  /** Signs and posts `raw` (a fresh signature each time, as Stripe signs each delivery). */
  async function send(path: string, raw: string, kind: Exchange['kind'], eventId: string): Promise<Exchange> {
    const sentAtMs = performance.now();
    const exchange: Exchange = { kind, eventId, sentAtMs, status: 0, latencyMs: 0, body: {}, error: null };
    try {
      const res = await fetch(`${hotPathUrl}${path}`, {
        method: 'POST',
        body: raw,
        headers: { 'content-type': 'application/json', 'stripe-signature': sign(raw) },
      });
      exchange.status = res.status;
      exchange.body = (await res.json()) as ResponseBody;
    } catch (error) {
      exchange.error = String(error);
    }
    exchange.latencyMs = performance.now() - sentAtMs;
    exchanges.push(exchange);
    return exchange;
  }

  function track(work: Promise<void>): void {
    const promise = work.finally(() => inFlight.delete(promise));
    inFlight.add(promise);
  }

  /** Stripe delivers the lifecycle event, and now and then delivers it again once answered. */
  async function sendLifecycle(event: { id: string }, kind: 'created' | 'capture'): Promise<Exchange> {
    const raw = JSON.stringify(event);
    const first = await send('/stripe/events', raw, kind, event.id);
    if (rand() < LIFECYCLE_REPLAY_SHARE) await send('/stripe/events', raw, 'lifecycle-replay', event.id);
    return first;
  }

  /** After an approval: sometimes the `created` event, and after it sometimes a capture of half. */
  async function followUp(auth: Authorization): Promise<void> {
    if (auth.grantedCents === 0 || rand() >= CREATED_SHARE) return;
    const created = authorizationEvent({
      type: 'issuing_authorization.created',
      cardId: auth.user.cardId,
      authorizationId: auth.authorizationId,
      amountCents: auth.grantedCents,
      approved: true,
      status: 'pending',
      requestHistory: 1,
      createdS: auth.createdS,
    });
    lifecycleEvents.set(created.id, { kind: 'created', user: auth.user, capturedCents: 0 });
    const answer = await sendLifecycle(created, 'created');
    const capturedCents = Math.floor(auth.grantedCents / 2);
    if (answer.status !== 200 || capturedCents === 0 || rand() >= CAPTURE_SHARE) return;
    const capture = transactionEvent({
      cardId: auth.user.cardId,
      type: 'capture',
      amountCents: capturedCents,
      authorizationId: auth.authorizationId,
      createdS: Math.floor(Date.now() / 1000),
    });
    lifecycleEvents.set(capture.id, { kind: 'capture', user: auth.user, capturedCents });
    await sendLifecycle(capture, 'capture');
  }

  async function authorize(user: TestUser, amountCents: number): Promise<void> {
    const createdS = Math.floor(Date.now() / 1000);
    const event = authorizationRequest({
      cardId: user.cardId,
      amountCents,
      controllable: user.kind === 'poor',
      createdS,
    });
    const auth: Authorization = {
      user,
      eventId: event.id,
      authorizationId: event.data.object.id,
      createdS,
      raw: JSON.stringify(event),
      answer: null,
      grantedCents: 0,
    };
    authorizations.push(auth);
    const exchange = await send('/stripe/authorizations', auth.raw, 'request', auth.eventId);
    if (exchange.status !== 200) return;
    auth.answer = exchange.body;
    auth.grantedCents = exchange.body.approved === true ? (exchange.body.amount ?? amountCents) : 0;
    answeredSoFar.push(auth);
    await followUp(auth);
  }

  /** Stripe retrying an answered request: the same event, signed again; the first answer must come back. */
  async function replay(auth: Authorization): Promise<void> {
    const exchange = await send('/stripe/authorizations', auth.raw, 'replay', auth.eventId);
    if (exchange.status === 200 && JSON.stringify(exchange.body) !== JSON.stringify(auth.answer)) {
      replayMismatches.push(
        `${auth.eventId}: ${JSON.stringify(auth.answer)} then ${JSON.stringify(exchange.body)}`,
      );
    }
  }

  function sendOne(): void {
    if (answeredSoFar.length > 0 && rand() < REPLAY_SHARE) {
      track(replay(answeredSoFar[Math.floor(rand() * answeredSoFar.length)]!));
      return;
    }
    const user = users[Math.floor(rand() * users.length)]!;
    track(authorize(user, 100 + Math.floor(rand() * 2_400)));
  }

  const samples: Sample[] = [];
  /** The outbox's length, and the writer's state and metrics ('down' while it is being restarted). */
  async function sample(): Promise<void> {
    const outbox = await outboxLength();
    let health = { state: 'down' };
    let metrics = '';
    try {
      [health, metrics] = await Promise.all([
        fetch(`${writerUrl}/healthz`).then((r) => r.json() as Promise<{ state: string }>),
        fetch(`${writerUrl}/metrics`).then((r) => r.text()),
      ]);
    } catch {
      // The writer exited (recorded in writerExits) and its successor is not listening yet.
    }
    samples.push({
      atMs: performance.now(),
      outbox,
      writerState: health.state,
      writerBacklog: metric(metrics, 'credana_ledger_backlog_entries'),
      writerLagMs: metric(metrics, 'credana_ledger_lag_ms'),
      retries: metric(metrics, 'credana_ledger_batch_failures_total', 'kind="retryable"'),
    });
  }

  // This process's HTTP client first: Node loads fetch's implementation on its first call, and each
  // request in flight opens a connection. Left to the first swipes, that cost (~100 ms more for a first
  // burst of 6 than for the next at a load average of 19) was counted as the hot path's latency. The hot
  // path says it is ready, on the port Stripe calls.
  const readyAtStart = await Promise.all(
    users.map(async () => ((await (await fetch(`${hotPathUrl}/readyz`)).json()) as { ready: boolean }).ready),
  );
  expect(readyAtStart).toEqual(users.map(() => true));
  // A $0 verification per user warms the process's own caches (card → user, account snapshots).
  await Promise.all(users.map((user) => authorize(user, 0)));
  expect(authorizations.map((a) => a.answer?.approved)).toEqual(users.map(() => true));

  // Open-loop traffic at RATE_PER_S until told to stop, whatever the answers' latency.
  const trafficStartedMs = performance.now();
  const traffic = (async () => {
    let sent = 0;
    while (!stopTraffic) {
      const due = Math.floor(((performance.now() - trafficStartedMs) * RATE_PER_S) / 1000);
      for (; sent < due; sent++) sendOne();
      await sleep(5);
    }
  })();
  await sleep(BEFORE_OUTAGE_MS);
  await sample();

  // ── The outage: pg_ctl stop -m immediate, without blocking this process's traffic.
  await cluster!.stopAsync();
  const outageStartedMs = performance.now();
  await expect(sql`select 1`).rejects.toThrow();
  const outboxAtStop = await outboxLength();
  while (performance.now() - outageStartedMs < OUTAGE_MS) {
    await sample();
    await sleep(MONITOR_INTERVAL_MS);
  }
  const outboxAtRestart = await outboxLength();
  const readyInOutage = (await (await fetch(`${hotPathUrl}/readyz`)).json()) as Record<string, boolean>;
  const outageEndedMs = performance.now();
  await cluster!.startAsync();
  const restartedMs = performance.now();

  // Traffic goes on while the writer catches up. Caught up: less than a second of traffic left.
  let caughtUpMs: number | null = null;
  while (performance.now() - restartedMs < AFTER_OUTAGE_MS) {
    await sample();
    if (caughtUpMs === null && samples.at(-1)!.outbox < RATE_PER_S)
      caughtUpMs = performance.now() - restartedMs;
    await sleep(MONITOR_INTERVAL_MS);
  }
  stopTraffic = true;
  await traffic;
  while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
  const trafficStoppedMs = performance.now();
  for (;;) {
    const outbox = await outboxLength();
    if (outbox === 0) break;
    if (performance.now() - restartedMs > AFTER_OUTAGE_MS + CATCH_UP_MAX_MS) {
      throw new Error(
        `the writer did not catch up: ${outbox} entries left; writer exits: ${JSON.stringify(writerExits)}`,
      );
    }
    await sleep(50);
  }
  const drainedMs = performance.now();
  caughtUpMs ??= drainedMs - restartedMs;
  // The writer must retry through the outage, not exit (it did now and then while this test was being
  // written: postgres.js 3.4.9 can throw from a setImmediate when a connection closes under a pending
  // write). Soft, so the checks below still show whether the outbox and a restarted writer kept everything.
  expect
    .soft(
      writerExits.map(
        (e) => `exit ${e.exit}, ${Math.round(e.atMs - outageStartedMs)} ms into the outage: ${e.output}`,
      ),
      'the ledger writer exited instead of retrying',
    )
    .toEqual([]);

  // ── Every answer: HTTP 200, within the budget, a well-formed decision or event receipt.
  expect(exchanges.filter((e) => e.status !== 200 || e.error !== null)).toEqual([]);
  expect(replayMismatches).toEqual([]);
  const decisionExchanges = exchanges.filter((e) => e.kind === 'request' || e.kind === 'replay');
  // At this client, every answer inside Stripe's own deadline; the decision budget itself is checked
  // below on the hot path's own clock (decisions.latency_us, from the request's arrival to its answer).
  // The client's clock also counts the time this test process and the kernel took to run it, which on a
  // loaded 2-core machine reached 424–671 ms for 8 of ~2,500 answers whose server time was in budget.
  const late = decisionExchanges.filter((e) => e.latencyMs > STRIPE_DEADLINE_MS);
  expect(late.map((e) => `${e.eventId} ${e.kind} ${Math.round(e.latencyMs)} ms`)).toEqual([]);
  for (const e of decisionExchanges) {
    const reason = e.body.metadata?.reason ?? '';
    expect(['approved', 'partial', 'insufficient_credit']).toContain(reason);
    expect(e.body.approved).toBe(reason !== 'insufficient_credit');
  }
  for (const e of exchanges.filter((x) => x.kind === 'created' || x.kind === 'capture'))
    expect(e.body).toEqual({ received: true, processed: true, duplicate: false });
  for (const e of exchanges.filter((x) => x.kind === 'lifecycle-replay'))
    expect(e.body).toEqual({ received: true, processed: true, duplicate: true });

  // ── During the outage: traffic kept flowing; approvals and declines all came from Redis.
  const inOutage = exchanges.filter((e) => e.sentAtMs >= outageStartedMs && e.sentAtMs < outageEndedMs);
  const outageDecisions = inOutage.filter((e) => e.kind === 'request' || e.kind === 'replay');
  const count = (list: Exchange[], reason: string) =>
    list.filter((e) => e.body.metadata?.reason === reason).length;
  expect(outageDecisions.length).toBeGreaterThan(0.8 * RATE_PER_S * (OUTAGE_MS / 1000));
  expect(count(outageDecisions, 'approved')).toBeGreaterThan(100);
  expect(count(outageDecisions, 'insufficient_credit')).toBeGreaterThan(10);
  expect(inOutage.filter((e) => e.kind === 'replay').length).toBeGreaterThan(0);
  expect(inOutage.filter((e) => e.kind === 'capture').length).toBeGreaterThan(0);
  // Ready through the outage: the hot path decides from Redis; Postgres is only reported.
  expect(readyInOutage).toEqual({ ready: true, redis: true, postgres: false, suspect: false });
  const hotPathMetrics = await (await fetch(`${hotPathMetricsUrl}/metrics`)).text();
  expect(metric(hotPathMetrics, 'credana_decision_fallbacks_total')).toBe(0);
  expect(metric(hotPathMetrics, 'credana_decision_budget_exceeded_total')).toBe(0);
  expect(metric(hotPathMetrics, 'credana_decisions_total', 'source="redis"')).toBe(decisionExchanges.length);

  // ── The outbox kept every entry made during the outage (nothing acked), and the writer retried.
  // XLEN is the truth; the writer's own backlog and lag gauges must follow it while a batch is retried
  // (they are sampled on a timer, so an alert on the lag fires during an outage).
  const outboxEntriesInOutage = inOutage.filter(
    (e) => e.kind === 'request' || e.kind === 'created' || e.kind === 'capture',
  ).length;
  expect(outboxAtRestart - outboxAtStop).toBeGreaterThanOrEqual(outboxEntriesInOutage - 5);
  const outageSamples = samples.filter((s) => s.atMs >= outageStartedMs && s.atMs < outageEndedMs);
  for (let i = 1; i < outageSamples.length; i++)
    expect(outageSamples[i]!.outbox).toBeGreaterThanOrEqual(outageSamples[i - 1]!.outbox);
  expect(outageSamples.some((s) => s.writerState === 'retrying')).toBe(true);
  const lateInOutage = outageSamples.filter(
    (s) => s.atMs > outageEndedMs - 5_000 && s.writerState !== 'down',
  );
  expect(lateInOutage.length).toBeGreaterThan(0);
  for (const s of lateInOutage) {
    expect(s.writerLagMs).toBeGreaterThan(OUTAGE_MS - 10_000);
    expect(s.writerBacklog).toBeGreaterThan((outboxAtRestart - outboxAtStop) / 2);
  }
  expect(outageSamples.some((s) => s.retries > 0)).toBe(true);
  expect(await redis!.xlen(deadLetterKey(prefix))).toBe(0);

  // ── Postgres: every decision exactly once, as answered (replays added nothing).
  const answered = authorizations.filter((a) => a.answer !== null);
  expect(answered).toHaveLength(authorizations.length);
  const rows = await sql<
    {
      event_id: string;
      id: string;
      approved: boolean;
      approved_cents: string;
      reason: string;
      source: string;
      latency_us: string;
    }[]
  >`select event_id, id, approved, approved_cents::text, reason, source, latency_us::text from decisions`;
  // The decision budget on the hot path's own clock: no decision took longer than BUDGET_MS.
  expect(
    rows
      .filter((row) => Number(row.latency_us) > BUDGET_MS * 1_000)
      .map((row) => `${row.event_id} ${row.latency_us} µs`),
  ).toEqual([]);
  const byEvent = new Map(rows.map(({ latency_us: _, ...row }) => [row.event_id, row]));
  expect(rows).toHaveLength(answered.length);
  expect(byEvent.size).toBe(answered.length);
  for (const a of answered) {
    expect(byEvent.get(a.eventId)).toEqual({
      event_id: a.eventId,
      id: a.answer!.metadata!.decision_id,
      approved: a.answer!.approved,
      approved_cents: String(a.grantedCents),
      reason: a.answer!.metadata!.reason,
      source: 'redis',
    });
  }

  // Every money movement once: a hold transfer per approval that granted money, a capture transfer per
  // capture, one audit row each; every Stripe event once in card_events; no authorization twice.
  const captures = [...lifecycleEvents].filter(([, e]) => e.kind === 'capture');
  const expectedRefs = [
    ...answered.filter((a) => a.grantedCents > 0).map((a) => `hold:${a.eventId}`),
    ...captures.map(([id]) => `lifecycle:${id}`),
  ].sort();
  const refs = await sql<{ ref: string }[]>`select ref from ledger_transfers order by ref`;
  expect(refs.map((r) => r.ref)).toEqual(expectedRefs);
  const [counts] = await sql<
    { events: number; distinct_events: number; audits: number; authorizations: number }[]
  >`
    select (select count(*)::int from card_events) as events,
      (select count(distinct id)::int from card_events) as distinct_events,
      (select count(*)::int from audit_log) as audits,
      (select count(*)::int from authorizations) as authorizations`;
  expect(counts).toEqual({
    events: answered.length + lifecycleEvents.size,
    distinct_events: answered.length + lifecycleEvents.size,
    audits: expectedRefs.length,
    authorizations: answered.length,
  });

  // Balances: what the answers granted and the captures took, per user, in Postgres and in Redis.
  for (const user of users) {
    const granted = answered.filter((a) => a.user === user).reduce((sum, a) => sum + a.grantedCents, 0);
    const captured = captures
      .filter(([, e]) => e.user === user)
      .reduce((sum, [, e]) => sum + e.capturedCents, 0);
    const [account] = await sql<{ holds_cents: string; unsettled_cents: string }[]>`
      select holds_cents, unsettled_cents from credit_accounts where user_id = ${user.userId}`;
    expect({ user: user.kind, ...account }).toEqual({
      user: user.kind,
      holds_cents: String(granted - captured),
      unsettled_cents: String(captured),
    });
    const [hold, unsettled] = await redis!.hmget(
      userKeys(prefix, user.userId).account,
      ACCOUNT.holdsCents,
      ACCOUNT.unsettledCents,
    );
    expect({ user: user.kind, hold, unsettled }).toEqual({
      user: user.kind,
      hold: String(granted - captured),
      unsettled: String(captured),
    });
  }
  expect(
    await conservationProblems(
      sql,
      redis!,
      prefix,
      users.map((u) => u.userId),
    ),
  ).toEqual([]);
  expect(await sql`select * from audit_log_verify()`).toEqual([]);

  // One line of numbers for whoever reads the run: what the outage looked like from outside.
  const writerMetrics = await (await fetch(`${writerUrl}/metrics`)).text();
  const latencies = decisionExchanges.map((e) => e.latencyMs).sort((a, b) => a - b);
  const backAt = samples.find((s) => s.atMs > restartedMs && s.writerState === 'running')?.atMs;
  console.log(
    JSON.stringify({
      decisions: decisionExchanges.length,
      lifecycleEvents: exchanges.length - decisionExchanges.length,
      duringOutage: {
        requests: inOutage.length,
        decisions: outageDecisions.length,
        approved: count(outageDecisions, 'approved'),
        partial: count(outageDecisions, 'partial'),
        declined: count(outageDecisions, 'insufficient_credit'),
        replays: inOutage.filter((e) => e.kind === 'replay').length,
        lifecycle: inOutage.length - outageDecisions.length,
      },
      outbox: {
        atStop: outboxAtStop,
        atRestart: outboxAtRestart,
        peak: Math.max(...samples.map((s) => s.outbox)),
      },
      writerMetricsMaxInOutage: {
        backlog: Math.max(...outageSamples.map((s) => s.writerBacklog)),
        lagMs: Math.max(...outageSamples.map((s) => s.writerLagMs)),
      },
      writerRetryingAfterRestartMs: backAt === undefined ? null : Math.round(backAt - restartedMs),
      catchUpMs: Math.round(caughtUpMs),
      drainedAfterTrafficStopMs: Math.round(drainedMs - trafficStoppedMs),
      writerExits: writerExits.length,
      latencyMs: {
        p50: Math.round(latencies[Math.floor(latencies.length / 2)]!),
        p99: Math.round(latencies[Math.floor(latencies.length * 0.99)]!),
        max: Math.round(latencies.at(-1)!),
      },
      // Counters of the current writer process (they start again with a restarted one).
      retryableBatchFailures: metric(
        writerMetrics,
        'credana_ledger_batch_failures_total',
        'kind="retryable"',
      ),
      written: {
        applied: metric(writerMetrics, 'credana_ledger_entries_written_total', 'result="applied"'),
        duplicate: metric(writerMetrics, 'credana_ledger_entries_written_total', 'result="duplicate"'),
      },
      trafficS: Math.round((trafficStoppedMs - trafficStartedMs) / 100) / 10,
    }),
  );
});
