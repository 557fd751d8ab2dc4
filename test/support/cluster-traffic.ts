/**
 * Live signed traffic against hot-path processes and a ledger writer on a private Redis Cluster, and the
 * checks that the books survived whatever the cluster went through (a failover, a slot move): every
 * approval keeps its hold, no user beyond their credit, and once Stripe's word on each swipe is in and
 * the writer has drained, Postgres holds exactly what was approved, nothing dead-lettered, conservation
 * clean. Used by test/redis-cluster-failover.test.ts and test/redis-cluster-reshard.test.ts.
 */
import { expect } from 'vitest';
import { waitForEmptyOutbox } from '../../ledger-writer/testing.ts';
import type { Sql } from '../../shared/db/client.ts';
import { createRedis, isCluster, type Redis } from '../../shared/redis/client.ts';
import { deadLetterKey, userKeys } from '../../shared/redis/keys.ts';
import { conservationProblems } from './conservation.ts';
import { redisEnv, type TestServices } from './db.ts';
import { testConfig } from './hot-path.ts';
import { freePort, type ServiceProcess, spawnService } from './processes.ts';
import type { RedisCluster } from './redis-cluster.ts';
import { authorizationEvent, authorizationRequest, sign, TEST_WEBHOOK_SECRET } from './stripe.ts';

/** The test services with their Redis switched to a private cluster (and a client of it). */
export function onCluster(shared: TestServices, cluster: RedisCluster): TestServices {
  const redis = createRedis({ url: 'redis://unused', clusterNodes: cluster.seeds });
  return { ...shared, redis, redisUrl: 'redis://unused', redisClusterNodes: cluster.seeds };
}

export async function until(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`not reached in ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The `host:port` of the primary that owns `key`'s slot, from the client's slot map. */
export async function ownerOf(redis: Redis, key: string): Promise<string> {
  if (!isCluster(redis)) throw new Error('expected a cluster client');
  const slot = Number(await redis.cluster('KEYSLOT', key));
  const owner = redis.slots[slot]?.[0];
  if (owner === undefined) throw new Error(`no node owns slot ${slot}`);
  return owner;
}

function baseEnv(services: TestServices): Record<string, string> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    ...redisEnv(services),
    REDIS_KEY_PREFIX: services.prefix,
    STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
  };
}

export interface HotPathProcess {
  url: string;
  metricsUrl: string;
  process: ServiceProcess;
}

/** A hot-path process (logging each decision, with its source) on the services' Redis; added to `processes`. */
export async function startHotPathProcess(
  services: TestServices,
  settings: Record<string, string>,
  processes: ServiceProcess[],
): Promise<HotPathProcess> {
  const port = await freePort();
  const hotPath = await spawnService(
    'hot-path/main.ts',
    {
      ...baseEnv(services),
      ...settings,
      DATABASE_URL: testConfig(services).DATABASE_URL,
      HOT_PATH_PORT: String(port),
      // Each decision's log line (its source: redis or the Postgres fallback) for the checks.
      LOG_LEVEL: 'info',
    },
    'hot-path ready',
  );
  processes.push(hotPath);
  const metricsUrl = /hot-path metrics on (http:\/\/\S+)/.exec(hotPath.output())?.[1];
  if (metricsUrl === undefined) throw new Error('the hot path did not announce its metrics port');
  return { url: `http://127.0.0.1:${port}`, metricsUrl: `${metricsUrl}/metrics`, process: hotPath };
}

/** A ledger writer process (as its own database role) on the services' Redis; added to `processes`. */
export async function startLedgerWriterProcess(
  services: TestServices,
  processes: ServiceProcess[],
): Promise<ServiceProcess> {
  const writer = await spawnService(
    'ledger-writer/main.ts',
    {
      ...baseEnv(services),
      DATABASE_URL: services.urlFor('credana_ledger_writer'),
      LEDGER_WRITER_PORT: '0',
    },
    'ledger-writer ready',
  );
  processes.push(writer);
  return writer;
}

export async function postSigned(url: string, body: unknown) {
  const raw = JSON.stringify(body);
  const res = await fetch(url, {
    method: 'POST',
    body: raw,
    headers: { 'content-type': 'application/json', 'stripe-signature': sign(raw) },
  });
  return {
    status: res.status,
    json: (await res.json()) as { approved?: boolean; metadata?: { reason?: string } },
  };
}

export interface TrafficUser {
  userId: string;
  cardId: string;
  creditCents: bigint;
}

export interface Swipe<Phase extends string> {
  userId: string;
  cardId: string;
  authorizationId: string;
  amountCents: number;
  approved: boolean;
  reason: string | undefined;
  createdS: number;
  /** When it was sent, as the test names the moments of its trouble. */
  phase: Phase;
  eventId: string;
  /** From sending the request to its answer, as the test saw it. */
  latencyMs: number;
}

/** One signed authorization request for `user`, answered 200 (asserted), as a Swipe. */
export async function swipe<Phase extends string>(
  hotPathUrl: string,
  user: TrafficUser,
  amountCents: number,
  phase: Phase,
): Promise<Swipe<Phase>> {
  const request = authorizationRequest({ cardId: user.cardId, amountCents });
  const sentAt = performance.now();
  const res = await postSigned(`${hotPathUrl}/stripe/authorizations`, request);
  const latencyMs = performance.now() - sentAt;
  expect(res.status).toBe(200);
  return {
    userId: user.userId,
    cardId: user.cardId,
    authorizationId: request.data.object.id,
    amountCents,
    approved: res.json.approved === true,
    reason: res.json.metadata?.reason,
    createdS: request.created,
    phase,
    eventId: request.id,
    latencyMs,
  };
}

/** The hot path's own line for a decision (its source: redis, postgres or none), or undefined. */
export function decisionLogLine(processes: readonly ServiceProcess[], eventId: string): string | undefined {
  return processes
    .flatMap((p) => p.output().split('\n'))
    .find((line) => line.includes(eventId) && line.includes('authorization decided'));
}

/** Where a swipe was decided, from the hot path's log line: 'redis', 'postgres', 'none' or '?'. */
export function decisionSource(processes: readonly ServiceProcess[], eventId: string): string {
  const line = decisionLogLine(processes, eventId);
  return line === undefined ? '?' : (/"source":"(\w+)"/.exec(line)?.[1] ?? '?');
}

/**
 * Approvals answered whose hold is not in Redis now, each described with what Redis, Postgres and the
 * hot path's log say of it (`label` adds what the test knows of the swipe).
 */
export async function holdsMissing<Phase extends string>(
  services: TestServices,
  processes: readonly ServiceProcess[],
  swipes: readonly Swipe<Phase>[],
  label: (s: Swipe<Phase>) => string,
): Promise<string[]> {
  const { redis, prefix } = services;
  const sql = services.database.sql;
  const missing: string[] = [];
  for (const s of swipes.filter((x) => x.approved)) {
    const held = await redis.hget(userKeys(prefix, s.userId).holds, s.authorizationId);
    if (held === String(s.amountCents)) continue;
    const inRedis = await redis.get(userKeys(prefix, s.userId).decision(s.eventId));
    const [inPostgres] = await sql<{ approved: boolean; reason: string }[]>`
      select approved, reason from decisions where event_id = ${s.eventId}`;
    missing.push(
      `${s.authorizationId} (${label(s)}): hold ${held}; Redis decision ${inRedis}; ` +
        `Postgres decision ${JSON.stringify(inPostgres ?? null)}; ${decisionLogLine(processes, s.eventId) ?? 'no log line'}`,
    );
  }
  return missing;
}

/** No user was approved beyond their credit. */
export function expectWithinCredit<Phase extends string>(
  users: readonly TrafficUser[],
  swipes: readonly Swipe<Phase>[],
): void {
  for (const user of users) {
    const total = swipes
      .filter((s) => s.approved && s.userId === user.userId)
      .reduce((sum, s) => sum + s.amountCents, 0);
    expect(BigInt(total)).toBeLessThanOrEqual(user.creditCents);
  }
}

/**
 * Sends Stripe's word on each swipe (as we answered it) through the hot paths, waits for the writer to
 * drain, and checks the books: no dead letter, conservation clean, Postgres holds exactly what was
 * approved, and each authorization row says what we answered.
 */
export async function settleAndCheckBooks<Phase extends string>(
  services: TestServices,
  hotPathUrls: readonly string[],
  users: readonly TrafficUser[],
  swipes: readonly Swipe<Phase>[],
): Promise<void> {
  const { redis, prefix } = services;
  const sql: Sql = services.database.sql;
  // One event per authorization, so their order does not matter: eight at a time.
  const eventsAtOnce = 8;
  const settle = async (s: Swipe<Phase>, i: number) => {
    const event = authorizationEvent({
      type: 'issuing_authorization.created',
      cardId: s.cardId,
      authorizationId: s.authorizationId,
      amountCents: s.approved ? s.amountCents : 0,
      approved: s.approved,
      status: s.approved ? 'pending' : 'closed',
      requestHistory: 1,
      createdS: s.createdS,
    });
    const res = await postSigned(`${hotPathUrls[i % hotPathUrls.length]}/stripe/events`, event);
    expect(res.status).toBe(200);
  };
  for (let from = 0; from < swipes.length; from += eventsAtOnce) {
    await Promise.all(swipes.slice(from, from + eventsAtOnce).map((s, j) => settle(s, from + j)));
  }
  await waitForEmptyOutbox(redis, prefix, 60_000);

  expect(await redis.xrange(deadLetterKey(prefix), '-', '+')).toEqual([]);
  const userIds = users.map((u) => u.userId);
  expect(await conservationProblems(sql, redis, prefix, userIds)).toEqual([]);
  const approved = swipes.filter((s) => s.approved);
  const [total] = await sql<{ held: string }[]>`
    select coalesce(sum(holds_cents), 0)::text as held from credit_accounts where user_id in ${sql(userIds)}`;
  expect(total?.held).toBe(String(approved.reduce((sum, s) => sum + s.amountCents, 0)));
  const rows = await sql<{ id: string; approved: boolean; held_cents: string }[]>`
    select id, approved, held_cents::text from authorizations where id in ${sql(swipes.map((s) => s.authorizationId))}`;
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const s of swipes) {
    expect(byId.get(s.authorizationId)).toMatchObject({
      approved: s.approved,
      held_cents: s.approved ? String(s.amountCents) : '0',
    });
  }
}

/** One counter of a Prometheus text page: the sum over the series whose labels include `labels`. */
export async function metricValue(metricsUrl: string, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels !== '' && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
