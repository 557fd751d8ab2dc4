/**
 * `npm run bench:ledger`: the ledger writer's sustained throughput, batched vs one entry per
 * transaction, and its lag under a steady 5,000 entries/s, on a fresh database cloned from the test
 * template (migrated here if missing) and a private Redis prefix. Writes bench/ledger.json.
 *
 * `pooled` repeats the single-row and batched phases with the writer's connections going through a
 * private PgBouncer 1.18 in transaction pooling (scripts/dev/pgbouncer.ts: no named prepared
 * statements), as production connects it; `pooledToDirect` gives the ratios, from the same run. The
 * pooled phases run after the direct ones, on a database that has grown by their entries.
 *
 * `eventsPerS` is the writer alone: the backlog is generated and appended first (`appendEventsPerS`
 * says how fast the benchmark itself can produce entries), then the timer runs from the writer's start
 * until the streams are empty. `-- --batch-max=N` tries another batch size.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { loadavg } from 'node:os';
import { applyBatch, parseEntry } from '../hot-path/ledger-writer/apply.ts';
import { createLedgerWriterMetrics } from '../hot-path/ledger-writer/metrics.ts';
import { decisionFields, outboxBacklog } from '../hot-path/ledger-writer/testing.ts';
import { createLedgerWriter, streamIdMs } from '../hot-path/ledger-writer/writer.ts';
import { createDatabase, type Sql } from '../shared/db/client.ts';
import { createRedis } from '../shared/redis/client.ts';
import { allOutboxKeys, outboxKey } from '../shared/redis/keys.ts';
import { authorizationRequest } from '../shared/stripe/issuing-events.ts';
import { cloneTemplateDatabase, deletePrefix, dropDatabase } from '../test/support/db.ts';
import { redisUrl } from '../test/support/env.ts';
import { ensureTemplateDatabase } from '../test/support/global-setup.ts';
import { freePort } from '../test/support/processes.ts';
import { processesCpuMs } from './bench/proc-cpu.ts';
import { startPgBouncer } from './dev/pgbouncer.ts';

const BATCHED_ENTRIES = 30_000;
const SINGLE_ENTRIES = 2_000;
const RATE_PER_S = 5_000;
const RATE_SECONDS = 6;
const USERS = Number(
  process.argv.find((arg) => arg.startsWith('--users='))?.slice('--users='.length) ?? 10_000,
);
const BATCH_MAX = Number(
  process.argv.find((arg) => arg.startsWith('--batch-max='))?.slice('--batch-max='.length) ?? 500,
);
/** `-- --profile`: a CPU profile of the writer's drain phase only, to bench/ledger-writer.cpuprofile. */
const PROFILE = process.argv.includes('--profile');
const loads = () => loadavg().map((load) => Math.round(load * 100) / 100);

const loadAtStart = loads();
await ensureTemplateDatabase();
const url = await cloneTemplateDatabase();
const database = createDatabase({ url, poolMax: 4, applicationName: 'bench-ledger' });
const redis = createRedis({ url: redisUrl() });
// The writer's own connection (XREADGROUP BLOCK holds it); closed at the end or the process never exits.
const writerRedis = redis.duplicate();
const prefix = `b${randomBytes(5).toString('hex')}:`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

try {
  // Users spread as in production (each decision opens an authorization and moves its user's credit
  // account): `-- --users=N`, default 10,000, the number the hot-path benchmark uses.
  const users = (
    await database.sql<{ user_id: string; card_id: string }[]>`
      with u as (
        insert into users (id, credit_limit_cents, daily_limit_cents)
        select gen_random_uuid(), 10000000, 10000000 from generate_series(1, ${USERS})
        returning id
      ), a as (
        insert into credit_accounts (user_id) select id from u
      )
      insert into cards (id, user_id) select 'ic_bl_' || replace(id::text, '-', ''), id from u
      returning user_id::text, id as card_id`
  ).map((row) => ({ userId: row.user_id, cardId: row.card_id }));
  let n = 0;
  const fieldsOf = () => {
    const user = users[n++ % users.length]!;
    const eventId = `evt_bl_${n}_${randomBytes(4).toString('hex')}`;
    // The event as Stripe sends it (the shared builder's full authorization request, ~1.3 KB).
    const event = JSON.stringify(
      authorizationRequest({ cardId: user.cardId, amountCents: 1 + (n % 900), eventId }),
    );
    return decisionFields({
      userId: user.userId,
      cardId: user.cardId,
      grantedCents: BigInt(1 + (n % 900)),
      eventId,
      event,
    });
  };
  async function add(count: number): Promise<void> {
    const pipeline = redis.pipeline();
    for (let i = 0; i < count; i++) pipeline.xadd(outboxKey(prefix, n % 16), '*', ...fieldsOf());
    await pipeline.exec();
  }
  const backlog = () => outboxBacklog(redis, prefix);

  // 1. Single-row: one entry per transaction, the cost batching avoids.
  async function singleRowEventsPerSOn(sql: Sql): Promise<number> {
    const singles = Array.from({ length: SINGLE_ENTRIES }, (_, i) => {
      const parsed = parseEntry({ stream: 's', id: `${Date.now()}-${i}`, fields: toObject(fieldsOf()) });
      if (!parsed.ok) throw new Error(parsed.error);
      return parsed.entry;
    });
    const started = performance.now();
    for (const entry of singles) await applyBatch(sql, [entry]);
    return Math.round(SINGLE_ENTRIES / ((performance.now() - started) / 1000));
  }
  const singleRowEventsPerS = await singleRowEventsPerSOn(database.sql);
  let started: number;

  // 2. Batched: drain a backlog with the real writer.
  started = performance.now();
  await add(BATCHED_ENTRIES);
  const appendEventsPerS = Math.round(BATCHED_ENTRIES / ((performance.now() - started) / 1000));
  const metrics = createLedgerWriterMetrics();
  const writer = createLedgerWriter({
    redis: writerRedis,
    sql: database.sql,
    prefix,
    consumer: 'bench',
    batchMax: BATCH_MAX,
    batchWaitMs: 10,
    metrics,
  });
  started = performance.now();
  const cpuBefore = { writer: process.cpuUsage(), postgres: processesCpuMs('postgres') };
  const profiler = PROFILE ? await startProfile() : null;
  await writer.start();
  while ((await backlog()) > 0) await sleep(20);
  await profiler?.stop('bench/ledger-writer.cpuprofile');
  const drainMs = performance.now() - started;
  const eventsPerS = Math.round(BATCHED_ENTRIES / (drainMs / 1000));
  const writerCpu = process.cpuUsage(cpuBefore.writer);
  const postgresCpu = processesCpuMs('postgres');
  // CPU per 10,000 entries while draining: where the time goes (2 cores = 2,000 ms of CPU per s).
  const cpuMsPer10k = {
    writer: Math.round(((writerCpu.user + writerCpu.system) / 1000) * (10_000 / BATCHED_ENTRIES)),
    postgres:
      postgresCpu === null || cpuBefore.postgres === null
        ? null
        : Math.round((postgresCpu - cpuBefore.postgres) * (10_000 / BATCHED_ENTRIES)),
  };

  // 3. Lag at a steady 5,000/s: the age of the oldest unwritten entry, sampled every 50 ms.
  const lags: number[] = [];
  const until = Date.now() + RATE_SECONDS * 1000;
  const tickMs = 20;
  const sampler = setInterval(async () => {
    const firsts = await Promise.all(
      allOutboxKeys(prefix).map((key) => redis.xrange(key, '-', '+', 'COUNT', 1)),
    );
    const oldest = Math.min(...firsts.flatMap((f) => (f[0] ? [streamIdMs(f[0][0])] : [])));
    lags.push(Number.isFinite(oldest) ? Date.now() - oldest : 0);
  }, 50);
  while (Date.now() < until) {
    const tick = Date.now();
    await add((RATE_PER_S * tickMs) / 1000);
    await sleep(Math.max(0, tickMs - (Date.now() - tick)));
  }
  clearInterval(sampler);
  while ((await backlog()) > 0) await sleep(20);
  await writer.stop();

  // 4. Phases 1 and 2 again through PgBouncer (transaction pooling), the writer's own role's route in production.
  const upstream = new URL(url);
  const upstreamUser = decodeURIComponent(upstream.username) || 'postgres';
  const pgBouncer = await startPgBouncer({
    upstreamHost: upstream.hostname,
    upstreamPort: Number(upstream.port || 5432),
    port: await freePort(),
    users: [upstreamUser],
  });
  const pooledDatabase = createDatabase({
    url: pgBouncer.url(upstreamUser, upstream.pathname.slice(1)),
    poolMax: 4,
    applicationName: 'bench-ledger-pooled',
  });
  let pooled: { eventsPerS: number; singleRowEventsPerS: number };
  try {
    const pooledSingleRowEventsPerS = await singleRowEventsPerSOn(pooledDatabase.sql);
    await add(BATCHED_ENTRIES);
    const pooledWriter = createLedgerWriter({
      redis: writerRedis,
      sql: pooledDatabase.sql,
      prefix,
      consumer: 'bench-pooled',
      batchMax: BATCH_MAX,
      batchWaitMs: 10,
      metrics: createLedgerWriterMetrics(),
    });
    started = performance.now();
    await pooledWriter.start();
    while ((await backlog()) > 0) await sleep(20);
    const pooledDrainMs = performance.now() - started;
    await pooledWriter.stop();
    pooled = {
      eventsPerS: Math.round(BATCHED_ENTRIES / (pooledDrainMs / 1000)),
      singleRowEventsPerS: pooledSingleRowEventsPerS,
    };
  } finally {
    await pooledDatabase.close();
    await pgBouncer.stop();
  }

  lags.sort((a, b) => a - b);
  const lagMsAt5kPerS = lags[Math.floor(lags.length * 0.99)] ?? 0;
  const result = {
    eventsPerS,
    singleRowEventsPerS,
    pooled,
    pooledToDirect: {
      batched: Math.round((pooled.eventsPerS / eventsPerS) * 100) / 100,
      singleRow: Math.round((pooled.singleRowEventsPerS / singleRowEventsPerS) * 100) / 100,
    },
    appendEventsPerS,
    cpuMsPer10k,
    lagMsAt5kPerS,
    lagMsAt5kPerSMedian: lags[Math.floor(lags.length / 2)] ?? 0,
    batchMax: BATCH_MAX,
    users: USERS,
    batchedEntries: BATCHED_ENTRIES,
    singleEntries: SINGLE_ENTRIES,
    loadAverage1m5m15m: { atStart: loadAtStart, atEnd: loads() },
    note: 'lagMsAt5kPerS is the p99 of the oldest unwritten entry age, sampled every 50 ms for 6 s',
  };
  mkdirSync('bench', { recursive: true });
  writeFileSync('bench/ledger.json', `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await deletePrefix(redis, prefix);
  redis.disconnect();
  writerRedis.disconnect();
  await database.close();
  await dropDatabase(url);
}

async function startProfile() {
  const session = new Session();
  session.connect();
  const post = (method: string) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(method, (error, result) => (error ? reject(error) : resolve(result))),
    );
  await post('Profiler.enable');
  await post('Profiler.start');
  return {
    async stop(file: string) {
      const { profile } = (await post('Profiler.stop')) as { profile: unknown };
      writeFileSync(file, JSON.stringify(profile));
      session.disconnect();
    },
  };
}

function toObject(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  return fields;
}
