// Proves a money record Postgres rejects is not forgotten: on real Postgres and Redis with the real hot path and ledger writer, a force capture for a user Postgres lost (a foreign-key violation) is dead-lettered with its spend kept in Redis, alerted and listed; the cache job then leaves the user's credit alone even after the cause is fixed; the replay command writes it exactly once (conservation holds), a second replay is a no-op, and bad input gets one clear line.
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLedgerWriterMetrics } from '../../ledger-writer/metrics.ts';
import { waitForEmptyOutbox } from '../../ledger-writer/testing.ts';
import { createLedgerWriter, type LedgerWriter } from '../../ledger-writer/writer.ts';
import { cacheJob } from '../../reconciler/cache.ts';
import { compareUser } from '../../reconciler/cache-state.ts';
import { createReconcileMetrics } from '../../reconciler/metrics.ts';
import { runRecorded } from '../../reconciler/runs.ts';
import { ensureAccount } from '../../shared/redis/account.ts';
import { duplicateRedis } from '../../shared/redis/client.ts';
import { deadLetterKey, userDeadLettersKey, userKeys } from '../../shared/redis/keys.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPathWorld, post, setUpHotPathWorld, WETH_PRICE_E8 } from '../../test/support/hot-path.ts';
import { transactionEvent } from '../../test/support/stripe.ts';
import type { OpsCommand } from './command.ts';
import { createDeadLetterCommands } from './dead-letters.ts';

let world: HotPathWorld;
let writer: LedgerWriter;
const writerMetrics = createLedgerWriterMetrics();
const logLines: string[] = [];
let commands: Map<string, OpsCommand>;

beforeAll(async () => {
  world = await setUpHotPathWorld();
  const { services } = world;
  writer = createLedgerWriter({
    redis: duplicateRedis(services.redis),
    sql: services.sqlFor('credana_ledger_writer'),
    prefix: services.prefix,
    consumer: 'dead-letter-test',
    batchMax: 50,
    batchWaitMs: 10,
    metrics: writerMetrics,
    logger: pino({ level: 'info' }, { write: (line: string) => logLines.push(line) }),
  });
  await writer.start();
  const deps = { redis: services.redis, sql: services.database.sql, prefix: services.prefix };
  commands = new Map(
    createDeadLetterCommands(async () => ({ deps, close: async () => {} })).map((c) => [c.name, c]),
  );
});

afterAll(async () => {
  await writer?.stop();
  await world?.close();
});

/** Runs an ops command in-process; returns its exit code and what it printed. */
async function ops(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const command = commands.get(args[0]!);
  if (command === undefined) throw new Error(`no command ${args[0]}`);
  const code = await command.run(args.slice(1), { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join('\n'), err };
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000) {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('a dead-lettered money record', () => {
  it('keeps its spend in Redis, is alerted and listed, survives the cache job, and is replayed exactly once', async () => {
    const { services, hotPath } = world;
    const { redis, prefix } = services;
    const sql = services.database.sql;
    const collateral = wethForBorrowPower(100_000n, WETH_PRICE_E8);
    const user = await seedUser(sql, { collateral: [{ assetId: 'WETH', amountBase: collateral }] });
    await ensureAccount(redis, sql, prefix, user.userId);
    const keys = userKeys(prefix, user.userId);

    // Postgres loses the user (restored from a backup taken before the user was provisioned); the
    // cache still knows them, so the hot path books the force capture Stripe sends.
    await sql`delete from positions where user_id = ${user.userId}`;
    await sql`delete from credit_accounts where user_id = ${user.userId}`;
    await sql`delete from cards where user_id = ${user.userId}`;
    await sql`delete from users where id = ${user.userId}`;
    const capture = transactionEvent({
      cardId: user.cardId,
      type: 'capture',
      amountCents: 500,
      authorizationId: null,
      createdS: Math.floor(Date.now() / 1000),
    });
    expect((await post(hotPath, '/stripe/events', capture)).status).toBe(200);
    expect(await redis.hget(keys.account, 'uns')).toBe('500');

    // The writer finds Postgres refusing it (23503), dead-letters it, and keeps it in Redis.
    await waitForEmptyOutbox(redis, prefix, 15_000);
    await until('the dead letter', async () => (await redis.xlen(deadLetterKey(prefix))) === 1);
    expect(await redis.hget(keys.account, 'uns')).toBe('500');
    expect(await redis.scard(userDeadLettersKey(prefix, user.userId))).toBe(1);
    expect(await writerMetrics.registry.getSingleMetricAsString('credana_ledger_dead_letters')).toMatch(
      /credana_ledger_dead_letters 1/,
    );
    expect(
      await writerMetrics.registry.getSingleMetricAsString('credana_ledger_dead_lettered_total'),
    ).toContain('problem="failed"} 1');
    // One error log naming the entry, the user and the amount, and nothing of the record or event.
    const errors = logLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l['level'] === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ userId: user.userId, amountCents: '500', problem: 'failed' });
    expect(String(errors[0]?.['id'])).toMatch(/^\d+-\d+$/);
    expect(logLines.join('')).not.toContain('issuing.transaction');
    expect(logLines.join('')).not.toContain('TEST GROCER');

    // Listed with its kind, user, amount, error and age; shown without the raw event.
    const listed = await ops('dead-letters');
    expect(listed.code).toBe(0);
    const line = listed.out.split('\n').find((l) => l.includes(user.userId)) ?? '';
    const [id, problem, kind, lineUser, amount, age, error] = line.split('\t');
    expect({ problem, kind, lineUser, amount }).toEqual({
      problem: 'failed',
      kind: 'lifecycle',
      lineUser: user.userId,
      amount: '500',
    });
    expect(age).toMatch(/^\d+s$/);
    expect(error).toMatch(/^23503/);
    const shown = await ops('dead-letter', id!);
    expect(shown.code).toBe(0);
    expect(shown.out).toContain('"missesMoney": true');
    expect(shown.out).toContain('not shown');
    expect(shown.out).not.toContain('issuing.transaction'); // the raw Stripe event stays out

    // The cause is fixed (the user re-provisioned), and the cache job runs before anyone replays:
    // Postgres still lacks the capture, so the user is not drained and the spend stays in Redis.
    await sql`insert into users (id, credit_limit_cents, daily_limit_cents, blocked_mccs)
      values (${user.userId}, 10000000, 10000000, '{}')`;
    await sql`insert into credit_accounts (user_id) values (${user.userId})`;
    await sql`insert into cards (id, user_id, status) values (${user.cardId}, ${user.userId}, 'active')`;
    await sql`insert into positions (user_id, asset_id, collateral_base) values (${user.userId}, 'WETH', ${collateral.toString()})`;
    const job = () =>
      runRecorded(
        { sql, metrics: createReconcileMetrics() },
        'cache',
        cacheJob({ redis, prefix: services.prefix }),
      );
    expect(await compareUser(redis, sql, prefix, user.userId, Date.now())).toEqual({
      state: 'deferred',
      reason: 'dead_letters',
    });
    const first = await job();
    // Compared, the user would be cache_drift (uns: redis=500 postgres=0), "repaired" to 0.
    expect(first.findings.filter((f) => f['userId'] === user.userId)).toEqual([]);
    expect(await redis.hget(keys.account, 'uns')).toBe('500');

    // Bad input: one clear line, exit 2, nothing done.
    const noReason = await ops('replay-dead-letter', id!);
    expect(noReason.code).toBe(2);
    expect(noReason.err).toEqual(['--reason "..." is required (why this replay is safe now)']);
    expect((await ops('replay-dead-letter', 'nope', '--reason', 'x')).err).toEqual([
      'not a dead-letter id: "nope"',
    ]);
    expect((await ops('replay-dead-letter', '1-1', '--reason', 'x')).code).toBe(2);
    expect((await ops('dead-letter', id!, 'extra')).code).toBe(2);
    expect(await redis.xlen(deadLetterKey(prefix))).toBe(1);

    // Replayed once: written, audited with who and why, removed; the books balance.
    const replayed = await ops(
      'replay-dead-letter',
      id!,
      '--reason',
      'user row restored after the backup restore',
      '--actor',
      'alice',
    );
    expect(replayed).toMatchObject({ code: 0, err: [] });
    expect(replayed.out).toContain('written to Postgres');
    const [account] = await sql`select unsettled_cents from credit_accounts where user_id = ${user.userId}`;
    expect(account).toEqual({ unsettled_cents: '500' });
    const transfers = () =>
      sql<{ n: number }[]>`select count(*)::int as n from ledger_transfers where user_id = ${user.userId}`;
    expect((await transfers())[0]?.n).toBe(1);
    const audits = await sql<{ actor: string; reason: string }[]>`
      select actor, data->>'reason' as reason from audit_log where action = 'ledger.dead_letter_replay'`;
    expect(audits).toEqual([{ actor: 'alice', reason: 'user row restored after the backup restore' }]);
    expect(await redis.xlen(deadLetterKey(prefix))).toBe(0);
    expect(await redis.scard(userDeadLettersKey(prefix, user.userId))).toBe(0);
    expect(await conservationProblems(sql, redis, prefix, [user.userId])).toEqual([]);

    // A second replay is a no-op.
    const again = await ops('replay-dead-letter', id!, '--reason', 'again', '--actor', 'bob');
    expect(again.code).toBe(0);
    expect(again.out).toContain('replayed by alice');
    expect((await transfers())[0]?.n).toBe(1);
    expect((await ops('dead-letters')).out).toBe('0 dead letter(s)');

    // Now drained: the cache job compares the user and finds Redis and Postgres equal.
    const second = await job();
    expect(second.findings.filter((f) => f['userId'] === user.userId)).toEqual([]);
    expect((await compareUser(redis, sql, prefix, user.userId, Date.now())).state).toBe('compared');
    expect(await redis.hget(keys.account, 'uns')).toBe('500');
  });
});
