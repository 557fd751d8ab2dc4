// Proves that ledger writers share the outbox shards with each shard's order kept: real writer
// processes on real Redis and Postgres split the 256 shards (each owned by exactly one, its lease and
// its Postgres fence naming the same writer); one is killed with -9 under traffic and its shards are
// taken over, every entry reaching Postgres exactly once and every capture after its authorization; a
// writer stopped (SIGSTOP) inside a transaction past its lease is fenced when resumed (SIGCONT) and
// commits nothing after the new owner; and re-applying an old entry after newer ones changes nothing.
import { hostname } from 'node:os';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { OUTBOX_SHARDS, outboxKey, shardLeaseKey, shardOf } from '../shared/redis/keys.ts';
import { redisEnv, setUpServices, type TestServices } from '../test/support/db.ts';
import { seedUser } from '../test/support/fixtures.ts';
import { freePort, type ServiceProcess, spawnService } from '../test/support/processes.ts';
import { addEntry, captureFields, decisionFields, outboxBacklog } from './testing.ts';
import { applyBatch, parseEntry } from './write-batch.ts';

let services: TestServices;
const children: ServiceProcess[] = [];
/** Each test's writers get a key prefix of their own, so no test sees another's leases. */
let prefix = '';
let tests = 0;
beforeEach(() => {
  prefix = `${services.prefix}${++tests}:`;
});
afterEach(async () => {
  for (const child of children) {
    child.child.kill('SIGCONT');
    await child.kill('SIGKILL');
  }
  children.length = 0;
});

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await services?.close();
});

const LEASE_MS = 3_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Writer {
  process: ServiceProcess;
  port: number;
  /** The consumer name (host-pid) its lease values start with. */
  name: string;
}

async function startWriter(): Promise<Writer> {
  const port = await freePort();
  const process = await spawnService(
    'ledger-writer/main.ts',
    {
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: services.urlFor('credana_ledger_writer'),
      ...redisEnv(services),
      REDIS_KEY_PREFIX: prefix,
      LEDGER_WRITER_PORT: String(port),
      LEDGER_BATCH_MAX: '200',
      LEDGER_SHARD_LEASE_MS: String(LEASE_MS),
    },
    'ledger-writer ready',
  );
  children.push(process);
  return { process, port, name: `${hostname()}-${process.child.pid}` };
}

/** The sum of a metric's samples that carry every label given (the registry adds labels of its own). */
async function metric(writer: Writer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${writer.port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!(line.startsWith(`${name}{`) || line.startsWith(`${name} `))) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      sum += Number(line.split(' ').pop());
  }
  return sum;
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** The lease holder (consumer name, without its instance suffix) of every shard; null when free. */
async function leaseHolders(): Promise<(string | null)[]> {
  const values = await Promise.all(
    Array.from({ length: OUTBOX_SHARDS }, (_, shard) => services.redis.get(shardLeaseKey(prefix, shard))),
  );
  return values.map((value) => (value === null ? null : value.slice(0, value.lastIndexOf('/'))));
}

/** Shards per writer when every shard is held by one of `writers`, in a near-even split; else null. */
async function balancedSplit(writers: readonly Writer[]): Promise<Map<string, number> | null> {
  const holders = await leaseHolders();
  const counts = new Map<string, number>();
  for (const holder of holders) {
    if (holder === null || !writers.some((w) => w.name === holder)) {
      return null;
    }
    counts.set(holder, (counts.get(holder) ?? 0) + 1);
  }
  const share = Math.ceil(OUTBOX_SHARDS / writers.length);
  for (const writer of writers) {
    const n = counts.get(writer.name) ?? 0;
    // Each takes free shards up to ceil(shards / writers) and releases only above it, so one may be
    // left a few short of its share when the others filled theirs first.
    if (n < share - 3 || n > share) {
      return null;
    }
  }
  // The Postgres fence of every shard names the writer holding its lease (a takeover finished).
  const fences = await services.database.sql<{ stream: string; owner: string }[]>`
    select stream, owner from ledger_stream_fences where stream like ${`${prefix}%`}`;
  const fenceOwner = new Map(fences.map((f) => [f.stream, f.owner.slice(0, f.owner.lastIndexOf('/'))]));
  for (const [shard, holder] of holders.entries()) {
    if (fenceOwner.get(outboxKey(prefix, shard)) !== holder) {
      return null;
    }
  }
  return counts;
}

it('splits the shards between three writer processes; a killed one’s shards are taken over, every entry written once, in order', {
  timeout: 240_000,
}, async () => {
  const { sql } = services.database;
  const users = await Promise.all(Array.from({ length: 120 }, () => seedUser(sql)));
  const writers = [await startWriter(), await startWriter(), await startWriter()];
  let split: Map<string, number> | null = null;
  await waitFor(async () => {
    split = await balancedSplit(writers);
    return split !== null;
  }, 'three writers to split the shards');
  expect([...split!.values()].reduce((a, b) => a + b, 0)).toBe(OUTBOX_SHARDS);
  // Each writer says so itself.
  const owned = await Promise.all(writers.map((w) => metric(w, 'credana_ledger_shards_owned')));
  expect(owned.reduce((a, b) => a + b, 0)).toBe(OUTBOX_SHARDS);

  // Traffic: every tick, an approved authorization for ten users, and the full capture of an
  // authorization approved three ticks before (so a capture always follows its authorization).
  const expected = new Map<string, { holds: bigint; unsettled: bigint }>(
    users.map((u) => [u.userId, { holds: 0n, unsettled: 0n }]),
  );
  const opened: { user: (typeof users)[number]; authorizationId: string; cents: bigint }[][] = [];
  let decisions = 0;
  let captures = 0;
  let tick = 0;
  async function produce(untilMs: number): Promise<void> {
    while (Date.now() < untilMs) {
      const pipeline = services.redis.pipeline();
      const batch: (typeof opened)[number] = [];
      for (let i = 0; i < 10; i++) {
        const user = users[(tick * 10 + i * 7) % users.length]!;
        const cents = BigInt(1 + ((tick * 31 + i) % 500));
        const authorizationId = `iauth_sh_${tick}_${i}`;
        pipeline.xadd(
          outboxKey(prefix, shardOf(user.userId)),
          '*',
          ...decisionFields({
            userId: user.userId,
            cardId: user.cardId,
            grantedCents: cents,
            authorizationId,
          }),
        );
        expected.get(user.userId)!.holds += cents;
        batch.push({ user, authorizationId, cents });
        decisions++;
      }
      for (const a of opened[tick - 3] ?? []) {
        pipeline.xadd(
          outboxKey(prefix, shardOf(a.user.userId)),
          '*',
          ...captureFields({
            userId: a.user.userId,
            cardId: a.user.cardId,
            authorizationId: a.authorizationId,
            amountCents: a.cents,
            heldBeforeCents: a.cents,
          }),
        );
        const e = expected.get(a.user.userId)!;
        e.holds -= a.cents;
        e.unsettled += a.cents;
        captures++;
      }
      opened.push(batch);
      tick++;
      await pipeline.exec();
      await sleep(20);
    }
  }

  await produce(Date.now() + 2_000);
  const [victim, ...survivors] = writers as [Writer, Writer, Writer];
  const victimShards = split!.get(victim.name)!;
  await victim.process.kill('SIGKILL');
  await produce(Date.now() + 3_000);

  await waitFor(
    async () => (await balancedSplit(survivors)) !== null,
    'the survivors to take the shards over',
  );
  await waitFor(async () => (await outboxBacklog(services.redis, prefix)) === 0, 'the outbox to drain');

  const [counts] = await sql<{ decisions: number; transfers: number; audits: number }[]>`select
    (select count(*)::int from decisions) as decisions, (select count(*)::int from ledger_transfers) as transfers,
    (select count(*)::int from audit_log) as audits`;
  expect(counts).toEqual({ decisions, transfers: decisions + captures, audits: decisions + captures });
  for (const [userId, e] of expected) {
    const [row] =
      await sql`select holds_cents, unsettled_cents from credit_accounts where user_id = ${userId}`;
    expect(row).toEqual({ holds_cents: e.holds.toString(), unsettled_cents: e.unsettled.toString() });
  }
  // Order per shard: every capture was committed after its authorization's hold.
  const [order] = await sql<{ captures: number; early: number }[]>`
    select count(*)::int as captures, count(*) filter (where c.id < h.id)::int as early
    from ledger_transfers c join ledger_transfers h on h.authorization_id = c.authorization_id
    where c.ref like 'lifecycle:%' and h.ref like 'hold:%'`;
  expect(order).toEqual({ captures, early: 0 });
  expect(await sql`select * from audit_log_verify()`).toEqual([]);
  // The victim's shards were taken over by the survivors, and its pending entries claimed.
  const takeovers = await Promise.all(
    survivors.map((w) => metric(w, 'credana_ledger_shards_acquired_total', { from: 'writer' })),
  );
  expect(takeovers.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(victimShards);
});

it('fences a writer stopped inside a transaction past its lease: resumed, it commits nothing after the new owner', {
  timeout: 240_000,
}, async () => {
  const { sql } = services.database;
  const user = await seedUser(sql);
  const a = await startWriter();
  await waitFor(async () => (await balancedSplit([a])) !== null, 'the writer to own every shard');

  // Hold the user's credit account so A's transaction for the entry waits inside, its fence row
  // already locked for share; then stop A there.
  const lock = await sql.reserve();
  await lock`begin`;
  await lock`select 1 from credit_accounts where user_id = ${user.userId} for update`;
  const authorizationId = 'iauth_fenced';
  await addEntry(
    services.redis,
    prefix,
    user.userId,
    decisionFields({ userId: user.userId, cardId: user.cardId, grantedCents: 1_000n, authorizationId }),
  );
  await waitFor(async () => {
    const rows = await sql`select 1 from pg_stat_activity
      where application_name = 'ledger-writer' and datname = current_database() and wait_event_type = 'Lock'`;
    return rows.length > 0;
  }, 'the writer to wait inside its transaction');
  a.process.child.kill('SIGSTOP');
  await lock`rollback`;
  lock.release();

  // B takes every shard over once A's leases lapse; A's open transaction is ended by Postgres after
  // the lease (idle in transaction), and B writes the entry, then a capture after it.
  const b = await startWriter();
  await waitFor(async () => (await balancedSplit([b])) !== null, 'the new writer to own every shard');
  const held = async () => {
    const [row] = await sql<{ holds_cents: string; unsettled_cents: string }[]>`
      select holds_cents::text, unsettled_cents::text from credit_accounts where user_id = ${user.userId}`;
    return row!;
  };
  await waitFor(async () => (await held()).holds_cents === '1000', 'the new owner to write the entry');
  await addEntry(
    services.redis,
    prefix,
    user.userId,
    captureFields({
      userId: user.userId,
      cardId: user.cardId,
      authorizationId,
      amountCents: 1_000n,
      heldBeforeCents: 1_000n,
    }),
  );
  await waitFor(async () => (await held()).unsettled_cents === '1000', 'the new owner to write the capture');

  // A resumes with the entry still in hand: its retry is refused by the fence, it writes nothing.
  a.process.child.kill('SIGCONT');
  await waitFor(async () => (await metric(a, 'credana_ledger_fenced_batches_total')) >= 1, 'A to be fenced');
  expect(await metric(a, 'credana_ledger_entries_written_total')).toBe(0);
  // Its shards were dropped, by the refused renewal or by the fence, whichever came first.
  expect(await metric(a, 'credana_ledger_shards_lost_total')).toBeGreaterThanOrEqual(OUTBOX_SHARDS);
  expect(await held()).toEqual({ holds_cents: '0', unsettled_cents: '1000' });
  const [counts] = await sql<{ decisions: number; transfers: number }[]>`select
    (select count(*)::int from decisions where authorization_id = ${authorizationId}) as decisions,
    (select count(*)::int from ledger_transfers where authorization_id = ${authorizationId}) as transfers`;
  expect(counts).toEqual({ decisions: 1, transfers: 2 });
  // Both run on and split the shards again.
  await waitFor(async () => (await balancedSplit([a, b])) !== null, 'the two writers to split the shards');
  expect(await sql`select * from audit_log_verify()`).toEqual([]);
});

it('changes nothing when an old entry is applied again after newer ones of its authorization (a late writer)', async () => {
  const { sql } = services.database;
  const user = await seedUser(sql);
  const authorizationId = 'iauth_late';
  const entry = (id: string, fields: string[]) => {
    const map: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) map[fields[i]!] = fields[i + 1]!;
    const parsed = parseEntry({ stream: outboxKey(prefix, shardOf(user.userId)), id, fields: map });
    if (!parsed.ok) throw new Error(parsed.error);
    return parsed.entry;
  };
  const decision = entry(
    '1-0',
    decisionFields({ userId: user.userId, cardId: user.cardId, grantedCents: 700n, authorizationId }),
  );
  const capture = entry(
    '2-0',
    captureFields({
      userId: user.userId,
      cardId: user.cardId,
      authorizationId,
      amountCents: 700n,
      heldBeforeCents: 700n,
    }),
  );
  await applyBatch(sql, [decision]);
  await applyBatch(sql, [capture]);
  const state = () => sql`select
    (select row(holds_cents, unsettled_cents)::text from credit_accounts where user_id = ${user.userId}) as account,
    (select row(status, held_cents, captured_cents)::text from authorizations where id = ${authorizationId}) as authorization,
    (select count(*)::int from ledger_transfers) as transfers, (select count(*)::int from audit_log) as audits`;
  const before = await state();
  expect(await applyBatch(sql, [decision])).toEqual({ applied: 0, duplicates: 1 });
  expect(await applyBatch(sql, [capture, decision])).toEqual({ applied: 0, duplicates: 2 });
  expect(await state()).toEqual(before);
});
