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
 * `rowSecurity` runs the writer (single-row and batched) and the Postgres fallback under their own roles
 * with row-level security on and off on the same database, alternating, and gives `onToOff` ratios.
 * `idlePolling` is what polling the shards costs with no traffic at 16, 256 (OUTBOX_SHARDS) and 1,024
 * shards, side by side: empty polls a second, the writer's CPU and a private redis-server's CPU.
 *
 * `eventsPerS` is the writer alone: the backlog is generated and appended first (`appendEventsPerS`
 * says how fast the benchmark itself can produce entries), then the timer runs from the writer's start
 * until the streams are empty. `-- --batch-max=N` tries another batch size.
 *
 * Merchant names are sealed as in production (docs/operations.md "Encryption at rest"): a real SoftHSM2
 * token, a data key unwrapped once, AES-256-GCM per name. `-- --no-seal` runs the writer with no data
 * key (every name queued unsealed in merchant_names_unsealed), the mode it falls into while the token
 * is away.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { loadavg } from 'node:os';
import { newDecisionId } from '../hot-path/decision/engine.ts';
import { decideFromPostgres } from '../hot-path/decision/postgres-fallback.ts';
import { createLedgerWriterMetrics } from '../ledger-writer/metrics.ts';
import { decisionFields, outboxBacklog } from '../ledger-writer/testing.ts';
import { type ApplyOptions, applyBatch, parseEntry } from '../ledger-writer/write-batch.ts';
import { createLedgerWriter, streamIdMs } from '../ledger-writer/writer.ts';
import { createDatabase, type Sql } from '../shared/db/client.ts';
import { HOLD_EXPIRY_DEFAULTS } from '../shared/policy/hold-expiry.ts';
import { createRedis } from '../shared/redis/client.ts';
import { allOutboxKeys, OUTBOX_SHARDS, userKeys } from '../shared/redis/keys.ts';
import { createMarket } from '../shared/redis/market.ts';
import { authorizationRequestEvent } from '../shared/stripe/events.ts';
import { cloneTemplateDatabase, deletePrefix, dropDatabase } from '../test/support/db.ts';
import { redisUrl } from '../test/support/env.ts';
import { seedAsset, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import { ensureTemplateDatabase } from '../test/support/global-setup.ts';
import { testConfig } from '../test/support/hot-path.ts';
import { createTestSealing, type TestSealing } from '../test/support/hsm.ts';
import { freePort, startRedisServer } from '../test/support/processes.ts';
import { authorizationRequest } from '../test/support/stripe-issuing-events.ts';
import { processesCpuMs } from './bench/proc-cpu.ts';
import { startPgBouncer } from './dev/pgbouncer.ts';

const BATCHED_ENTRIES = 30_000;
const SINGLE_ENTRIES = 2_000;
const RATE_PER_S = 5_000;
const RATE_SECONDS = 6;
/** Seconds each shard count of the idle-polling phase is measured. */
const IDLE_SECONDS = 5;
const USERS = Number(
  process.argv.find((arg) => arg.startsWith('--users='))?.slice('--users='.length) ?? 10_000,
);
const BATCH_MAX = Number(
  process.argv.find((arg) => arg.startsWith('--batch-max='))?.slice('--batch-max='.length) ?? 500,
);
/** `-- --profile`: a CPU profile of the writer's drain phase only, to bench/ledger-writer.cpuprofile. */
const PROFILE = process.argv.includes('--profile');
/** The tables drizzle/0012 turns RLS on for; the benchmark turns it off and on again between rounds. */
const RLS_TABLES = [
  'users',
  'cards',
  'wallets',
  'positions',
  'credit_accounts',
  'authorizations',
  'decisions',
  'fallback_decisions',
  'card_events',
  'ledger_transfers',
  'ledger_entries',
  'settlements',
  'chain_refunds',
  'withdrawal_approvals',
  'liquidations',
  'audit_log',
  'support_access',
];
const RLS_ROUNDS = 4;
const RLS_SINGLE_ENTRIES = 300;
const RLS_BATCHED_ENTRIES = 3_000;
const RLS_FALLBACK_DECISIONS = 300;
const SEAL = !process.argv.includes('--no-seal');
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
let sealing: TestSealing | null = null;

try {
  sealing = SEAL ? await createTestSealing(database.sql, 'bench-ledger') : null;
  // Every writer of this run seals with its own view (unwrapping the data key on first use, as at start).
  const apply = (): ApplyOptions => ({
    holdExpiry: HOLD_EXPIRY_DEFAULTS,
    merchantNames: sealing?.another().names ?? null,
  });
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
    // Each entry to its user's shard stream, as the hot path appends it.
    for (let i = 0; i < count; i++) {
      const fields = fieldsOf();
      pipeline.xadd(userKeys(prefix, users[(n - 1) % users.length]!.userId).outbox, '*', ...fields);
    }
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
    const options = apply();
    const started = performance.now();
    for (const entry of singles) await applyBatch(sql, [entry], options);
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
    apply: apply(),
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
    const pipeline = redis.pipeline();
    for (const key of allOutboxKeys(prefix)) pipeline.xrange(key, '-', '+', 'COUNT', 1);
    const firsts = ((await pipeline.exec()) ?? []).map(([, reply]) => reply as [string, string[]][]);
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
      apply: apply(),
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

  // 5. Row-level security (drizzle/0012): the writer and the Postgres fallback under their own roles,
  // with RLS on and off on the same database, in alternating rounds (on/off, off/on, …) so the load of
  // a shared machine falls on both sides alike.
  const rowSecurity = await benchRowSecurity(url, database.sql, users, fieldsOf);

  // 6. The idle cost of polling the shards (no BLOCK: one command per shard, shards.ts), side by side
  // at 16, 256 (OUTBOX_SHARDS) and 1,024 shards: one writer owning them all, no traffic, on a private
  // redis-server so its CPU is the writer's alone. The shard-count figures of docs/redis-layout.md.
  const idleRedisServer = await startRedisServer();
  const idlePolling: {
    shards: number;
    emptyPollsPerS: number;
    writerCpuMsPerS: number;
    redisCpuMsPerS: number;
  }[] = [];
  try {
    const redisCpuMs = async (client: ReturnType<typeof createRedis>) => {
      const info = await client.info('cpu');
      const field = (name: string) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? 0);
      return (field('used_cpu_user') + field('used_cpu_sys')) * 1000;
    };
    for (const shards of [16, OUTBOX_SHARDS, 1_024]) {
      const idleRedis = createRedis({ url: idleRedisServer.url });
      const idleMetrics = createLedgerWriterMetrics();
      const idleWriter = createLedgerWriter({
        redis: idleRedis,
        sql: database.sql,
        prefix: `${prefix}idle${shards}:`,
        consumer: 'bench-idle',
        batchMax: BATCH_MAX,
        batchWaitMs: 20,
        metrics: idleMetrics,
        shardCount: shards,
      });
      await idleWriter.start();
      while (idleWriter.shards.length < shards) await sleep(100);
      await sleep(2_000); // every shard's poll wait has grown to its maximum
      const polls = async () => (await idleMetrics.polls.get()).values.reduce((sum, v) => sum + v.value, 0);
      const probe = createRedis({ url: idleRedisServer.url });
      const before = { polls: await polls(), cpu: process.cpuUsage(), redisMs: await redisCpuMs(probe) };
      const startedMs = performance.now();
      await sleep(IDLE_SECONDS * 1000);
      const seconds = (performance.now() - startedMs) / 1000;
      const cpu = process.cpuUsage(before.cpu);
      const redisMs = (await redisCpuMs(probe)) - before.redisMs;
      idlePolling.push({
        shards,
        emptyPollsPerS: Math.round(((await polls()) - before.polls) / seconds),
        writerCpuMsPerS: Math.round(((cpu.user + cpu.system) / 1000 / seconds) * 10) / 10,
        redisCpuMsPerS: Math.round((redisMs / seconds) * 10) / 10,
      });
      probe.disconnect();
      await idleWriter.stop();
      idleRedis.disconnect();
    }
  } finally {
    await idleRedisServer.destroy();
  }

  lags.sort((a, b) => a - b);
  const lagMsAt5kPerS = lags[Math.floor(lags.length * 0.99)] ?? 0;
  const [stored] = await database.sql<{ sealed: number; queued: number }[]>`
    select (select count(*)::int from authorizations where merchant_name_sealed is not null) as sealed,
      (select count(*)::int from merchant_names_unsealed) as queued`;
  const result = {
    merchantNames: SEAL ? 'sealed (SoftHSM2 data key, AES-256-GCM)' : 'queued unsealed (no data key)',
    merchantNamesStored: stored,
    eventsPerS,
    singleRowEventsPerS,
    pooled,
    pooledToDirect: {
      batched: Math.round((pooled.eventsPerS / eventsPerS) * 100) / 100,
      singleRow: Math.round((pooled.singleRowEventsPerS / singleRowEventsPerS) * 100) / 100,
    },
    rowSecurity,
    appendEventsPerS,
    cpuMsPer10k,
    lagMsAt5kPerS,
    lagMsAt5kPerSMedian: lags[Math.floor(lags.length / 2)] ?? 0,
    idlePolling,
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
  sealing?.close();
}

async function benchRowSecurity(
  url: string,
  owner: Sql,
  users: readonly { userId: string; cardId: string }[],
  fieldsOf: () => string[],
) {
  const asRole = (role: string) => {
    const u = new URL(url);
    u.username = role;
    u.password = '';
    return u.toString();
  };
  const writer = createDatabase({
    url: asRole('credana_ledger_writer'),
    poolMax: 4,
    applicationName: 'bench-rls',
  });
  const hotPath = createDatabase({
    url: asRole('credana_hot_path'),
    poolMax: 4,
    applicationName: 'bench-rls',
  });
  const redis = createRedis({ url: redisUrl() });
  const subscriber = createRedis({ url: redisUrl() });
  const prefix = `b${randomBytes(5).toString('hex')}:`;
  const priceE8 = 300_000_000_000n;
  try {
    await seedAsset(owner, redis, prefix, WETH, priceE8, Math.floor(Date.now() / 1000));
    // The fallback's users hold collateral (the writer's users need none): approvals, not declines.
    const fallbackUsers = users.slice(0, 200);
    await owner`insert into positions (user_id, asset_id, collateral_base)
      select unnest(${fallbackUsers.map((u) => u.userId)}::uuid[]), 'WETH', ${wethForBorrowPower(10_000_000n, priceE8).toString()}`;
    const market = await createMarket(redis, subscriber, prefix);
    const settings = {
      ...testConfig({ databaseUrl: asRole('credana_hot_path'), redisUrl: redisUrl(), prefix }),
      FALLBACK_GRANT_CENTS_MAX: 10n ** 15n,
    };
    const entries = (count: number) =>
      Array.from({ length: count }, (_, i) => {
        const parsed = parseEntry({ stream: 's', id: `${Date.now()}-${i}`, fields: toObject(fieldsOf()) });
        if (!parsed.ok) throw new Error(parsed.error);
        return parsed.entry;
      });
    let decided = 0;
    const totalsMs = {
      on: { single: 0, batched: 0, fallback: 0 },
      off: { single: 0, batched: 0, fallback: 0 },
    };
    const approvals = { on: 0, off: 0 };
    for (let round = 0; round < RLS_ROUNDS; round++) {
      for (const mode of round % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
        const verb = mode === 'on' ? 'enable' : 'disable';
        await owner.unsafe(RLS_TABLES.map((t) => `alter table ${t} ${verb} row level security`).join('; '));
        const singles = entries(RLS_SINGLE_ENTRIES);
        let t0 = performance.now();
        for (const entry of singles) await applyBatch(writer.sql, [entry]);
        totalsMs[mode].single += performance.now() - t0;
        const batched = entries(RLS_BATCHED_ENTRIES);
        t0 = performance.now();
        for (let i = 0; i < batched.length; i += BATCH_MAX)
          await applyBatch(writer.sql, batched.slice(i, i + BATCH_MAX));
        totalsMs[mode].batched += performance.now() - t0;
        t0 = performance.now();
        for (let i = 0; i < RLS_FALLBACK_DECISIONS; i++) {
          const user = fallbackUsers[decided++ % fallbackUsers.length]!;
          const raw = JSON.stringify(
            authorizationRequest({
              cardId: user.cardId,
              amountCents: 100,
              eventId: `evt_rls_${decided}_${randomBytes(4).toString('hex')}`,
            }),
          );
          const event = authorizationRequestEvent.parse(JSON.parse(raw));
          const startedAtMs = Date.now();
          const { decision } = await decideFromPostgres(
            { sql: hotPath.sql, market, settings, now: Date.now, holder: 'bench-rls' },
            event,
            raw,
            newDecisionId(startedAtMs),
            startedAtMs,
            startedAtMs + 5_000,
          );
          if (decision.approved) approvals[mode]++;
        }
        totalsMs[mode].fallback += performance.now() - t0;
      }
    }
    // Leave the database as migrated.
    await owner.unsafe(RLS_TABLES.map((t) => `alter table ${t} enable row level security`).join('; '));
    market.close();
    const perS = (n: number, ms: number) => Math.round((n * RLS_ROUNDS) / (ms / 1000));
    const rates = (mode: 'on' | 'off') => ({
      singleRowEventsPerS: perS(RLS_SINGLE_ENTRIES, totalsMs[mode].single),
      batchedEventsPerS: perS(RLS_BATCHED_ENTRIES, totalsMs[mode].batched),
      fallbackDecisionsPerS: perS(RLS_FALLBACK_DECISIONS, totalsMs[mode].fallback),
      fallbackApprovals: approvals[mode],
    });
    const on = rates('on');
    const off = rates('off');
    const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
    return {
      on,
      off,
      onToOff: {
        singleRow: ratio(on.singleRowEventsPerS, off.singleRowEventsPerS),
        batched: ratio(on.batchedEventsPerS, off.batchedEventsPerS),
        fallback: ratio(on.fallbackDecisionsPerS, off.fallbackDecisionsPerS),
      },
      rounds: RLS_ROUNDS,
      note: 'ledger writer as credana_ledger_writer, fallback as credana_hot_path; RLS on vs off on one database, rounds alternating the order',
    };
  } finally {
    await deletePrefix(redis, prefix);
    redis.disconnect();
    subscriber.disconnect();
    await writer.close();
    await hotPath.close();
  }
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
