// Proves exactly-once across a crash: a real ledger-writer process is SIGKILLed in the middle of a
// 12,000-entry backlog, a new process (new consumer name) claims the dead one's unacked entries and
// finishes; every record is then in Postgres exactly once and every balance equals the entries' sum.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { outboxKey } from '../shared/redis/keys.ts';
import { redisEnv, setUpServices, type TestServices } from '../test/support/db.ts';
import { seedUser } from '../test/support/fixtures.ts';
import { type ServiceProcess, spawnService } from '../test/support/processes.ts';
import { decisionFields, outboxBacklog } from './testing.ts';

let services: TestServices;
let child: ServiceProcess | null = null;

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await child?.kill('SIGKILL');
  await services?.close();
});

const env = () => ({
  NODE_ENV: 'test',
  LOG_LEVEL: 'silent',
  DATABASE_URL: services.urlFor('credana_ledger_writer'),
  ...redisEnv(services),
  REDIS_KEY_PREFIX: services.prefix,
  LEDGER_WRITER_PORT: '0',
  LEDGER_BATCH_MAX: '200',
});

async function count(): Promise<number> {
  const [row] = await services.database.sql<{ n: number }[]>`select count(*)::int as n from decisions`;
  return row!.n;
}

const backlog = () => outboxBacklog(services.redis, services.prefix);

it('writes every record exactly once after the writer is killed mid-backlog and restarted', {
  timeout: 60_000,
}, async () => {
  const { sql } = services.database;
  const users = await Promise.all([1, 2, 3].map(() => seedUser(sql)));
  const expected = new Map<string, bigint>();
  const perUser = 4_000;
  for (const [u, user] of users.entries()) {
    const pipeline = services.redis.pipeline();
    let sum = 0n;
    for (let i = 0; i < perUser; i++) {
      const granted = BigInt(1 + ((i * 7 + u) % 500));
      sum += granted;
      pipeline.xadd(
        outboxKey(services.prefix, u),
        '*',
        ...decisionFields({ userId: user.userId, cardId: user.cardId, grantedCents: granted }),
      );
    }
    await pipeline.exec();
    expected.set(user.userId, sum);
  }
  const total = users.length * perUser;
  expect(await backlog()).toBe(total);

  child = await spawnService('ledger-writer/main.ts', env(), 'ledger-writer ready');
  while ((await count()) < total / 6) await new Promise((resolve) => setTimeout(resolve, 10));
  await child.kill('SIGKILL');
  const atKill = await count();
  expect(atKill).toBeLessThan(total);

  child = await spawnService('ledger-writer/main.ts', env(), 'ledger-writer ready');
  const until = Date.now() + 45_000;
  while ((await backlog()) > 0 && Date.now() < until)
    await new Promise((resolve) => setTimeout(resolve, 100));
  expect(await backlog()).toBe(0);
  await child.kill('SIGTERM');
  child = null;

  const [counts] = await sql<
    { decisions: number; transfers: number; events: number; audits: number }[]
  >`select
    (select count(*)::int from decisions) as decisions, (select count(*)::int from ledger_transfers) as transfers,
    (select count(*)::int from card_events) as events, (select count(*)::int from audit_log) as audits`;
  expect(counts).toEqual({ decisions: total, transfers: total, events: total, audits: total });
  for (const [userId, sum] of expected) {
    const [row] = await sql`select holds_cents from credit_accounts where user_id = ${userId}`;
    expect(row).toEqual({ holds_cents: sum.toString() });
    const [ledger] =
      await sql`select sum(amount_cents)::text as s from ledger_entries where user_id = ${userId} and account = 'user_holds'`;
    expect(ledger).toEqual({ s: sum.toString() });
  }
  expect(await sql`select * from audit_log_verify()`).toEqual([]);
});
