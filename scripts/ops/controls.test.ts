// Proves the operator's controls commands on real Postgres and Redis: each of the six changes Postgres and the cached account and records actor and reason in the audit log; bad input (no reason, bad amount, unknown card or user, wrong arity) gets one line and exit 2 and changes nothing; and `npm run ops` (scripts/ops.ts, run as a child process) lists, explains and runs them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureAccount } from '../../shared/redis/account.ts';
import { ACCOUNT, userKeys } from '../../shared/redis/keys.ts';
import { redisEnv, setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedUser } from '../../test/support/fixtures.ts';
import { runScript } from '../../test/support/processes.ts';
import type { OpsCommand } from './command.ts';
import { controlsCommands, parseDollarsToCents } from './controls.ts';

let services: TestServices;
let commands: Map<string, OpsCommand>;

beforeAll(async () => {
  services = await setUpServices();
  const deps = { sql: services.database.sql, redis: services.redis, prefix: services.prefix };
  commands = new Map(
    controlsCommands({ deps: async () => deps, defaultActor: 'alice-ops' }).map((c) => [c.name, c]),
  );
});

afterAll(async () => {
  await services?.close();
});

async function ops(name: string, ...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const command = commands.get(name);
  if (command === undefined) throw new Error(`no command ${name}`);
  const code = await command.run(args, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

/** A seeded user whose account is cached in Redis. */
async function cachedUser() {
  const seeded = await seedUser(services.database.sql, {});
  await ensureAccount(services.redis, services.database.sql, services.prefix, seeded.userId);
  return seeded;
}

async function lastAudit(entityId: string) {
  const [row] = await services.database.sql<
    { actor: string; action: string; data: Record<string, unknown> }[]
  >`
    select actor, action, data from audit_log where entity_id = ${entityId} order by id desc limit 1`;
  return row;
}

describe('controls commands', () => {
  it('freeze-card and unfreeze-card: Postgres, the cached card and the audit log', async () => {
    const { cardId } = await cachedUser();
    const frozen = await ops('freeze-card', cardId, '--reason', 'stolen card reported by phone');
    expect(frozen).toMatchObject({ code: 0, err: [] });
    expect(frozen.out).toHaveLength(1);
    const [card] = await services.database
      .sql`select ops_frozen, ops_frozen_by, ops_frozen_reason from cards where id = ${cardId}`;
    expect(card).toEqual({
      ops_frozen: true,
      ops_frozen_by: 'alice-ops',
      ops_frozen_reason: 'stolen card reported by phone',
    });
    const { userId } = (
      await services.database.sql<
        { userId: string }[]
      >`select user_id as "userId" from cards where id = ${cardId}`
    )[0]!;
    expect(await services.redis.hget(userKeys(services.prefix, userId).cards, cardId)).toBe('active|1');
    expect(await lastAudit(cardId)).toMatchObject({
      actor: 'alice-ops',
      action: 'card.ops_frozen',
      data: { reason: 'stolen card reported by phone' },
    });
    expect(await ops('unfreeze-card', cardId, '--reason', 'card found', '--actor', 'bob-ops')).toMatchObject({
      code: 0,
    });
    expect(await services.redis.hget(userKeys(services.prefix, userId).cards, cardId)).toBe('active|0');
    expect(await lastAudit(cardId)).toMatchObject({
      actor: 'bob-ops',
      action: 'card.ops_unfrozen',
      data: { reason: 'card found' },
    });
  });

  it('suspend-account, reinstate-account, set-credit-limit and set-daily-ceiling', async () => {
    const { userId } = await cachedUser();
    const account = userKeys(services.prefix, userId).account;
    expect(await ops('suspend-account', userId, '--reason', 'KYC review')).toMatchObject({ code: 0 });
    expect(await services.redis.hget(account, ACCOUNT.status)).toBe('suspended');
    expect(await lastAudit(userId)).toMatchObject({
      action: 'user.suspended',
      data: { reason: 'KYC review', before: 'active', after: 'suspended' },
    });
    expect(await ops('reinstate-account', userId, '--reason', 'KYC passed')).toMatchObject({ code: 0 });
    expect(await services.redis.hget(account, ACCOUNT.status)).toBe('active');

    expect(await ops('set-credit-limit', userId, '1234.56', '--reason', 'risk review')).toMatchObject({
      code: 0,
    });
    expect(await services.redis.hget(account, ACCOUNT.creditLimitCents)).toBe('123456');
    expect(await lastAudit(userId)).toMatchObject({
      action: 'user.credit_limit_set',
      data: { after: '123456', reason: 'risk review' },
    });

    expect(await ops('set-daily-ceiling', userId, '250', '--reason', 'new customer')).toMatchObject({
      code: 0,
    });
    expect(await services.redis.hget(account, ACCOUNT.dailyLimitCents)).toBe('25000');
    const [user] = await services.database
      .sql`select status, credit_limit_cents::text, daily_limit_ceiling_cents::text from users where id = ${userId}`;
    expect(user).toEqual({
      status: 'active',
      credit_limit_cents: '123456',
      daily_limit_ceiling_cents: '25000',
    });
  });

  it('answers bad input with one line and exit 2, and changes nothing', async () => {
    const { userId, cardId } = await cachedUser();
    const [auditBefore] = await services.database.sql<
      { n: number }[]
    >`select count(*)::int as n from audit_log`;
    const cases: [string, string[], RegExp][] = [
      ['freeze-card', [cardId], /--reason/],
      ['freeze-card', [cardId, '--reason', '   '], /--reason/],
      ['freeze-card', [], /<cardId>/],
      ['freeze-card', ['ic_does_not_exist', '--reason', 'x'], /no card ic_does_not_exist/],
      ['freeze-card', [cardId, '--reason', 'x', '--force'], /--force/],
      ['suspend-account', ['not-a-uuid', '--reason', 'x'], /not a user id/],
      ['suspend-account', ['00000000-0000-4000-8000-000000000000', '--reason', 'x'], /no user/],
      ['set-credit-limit', [userId, '12.5', '--reason', 'x'], /not an amount/],
      ['set-credit-limit', [userId, '-5', '--reason', 'x'], /not an amount|-5/],
      ['set-credit-limit', [userId, '99999999999999.99', '--reason', 'x'], /between 0 and/],
      ['set-daily-ceiling', [userId, '--reason', 'x'], /<dollars.cents>/],
    ];
    for (const [name, args, message] of cases) {
      const result = await ops(name, ...args);
      expect({ name, args, code: result.code, lines: result.err.length, out: result.out }).toEqual({
        name,
        args,
        code: 2,
        lines: 1,
        out: [],
      });
      expect(result.err[0]).toMatch(message);
    }
    const [auditAfter] = await services.database.sql<
      { n: number }[]
    >`select count(*)::int as n from audit_log`;
    expect(auditAfter?.n).toBe(auditBefore?.n);
    const [card] = await services.database.sql`select ops_frozen from cards where id = ${cardId}`;
    expect(card?.['ops_frozen']).toBe(false);
  });

  it('parses dollar amounts exactly', () => {
    expect(parseDollarsToCents('0')).toBe(0n);
    expect(parseDollarsToCents('2500.00')).toBe(250_000n);
    expect(parseDollarsToCents('90071992547409.91')).toBe(9_007_199_254_740_991n);
    expect(() => parseDollarsToCents('1e3')).toThrow(/not an amount/);
    expect(() => parseDollarsToCents('1,000')).toThrow(/not an amount/);
  });
});

describe('npm run ops (scripts/ops.ts as a child process)', () => {
  const env = () => ({
    PATH: process.env['PATH'] ?? '',
    DATABASE_URL: services.databaseUrl,
    ...redisEnv(services),
    REDIS_KEY_PREFIX: services.prefix,
    LOG_LEVEL: 'silent',
    // Unset NODE_ENV means production, which refuses the repository's public secrets.
    NODE_ENV: 'test',
  });

  it('lists the commands, explains one, refuses an unknown one, and runs freeze-card', async () => {
    const list = await runScript('scripts/ops.ts', ['help'], env());
    expect(list.code).toBe(0);
    for (const name of commands.keys()) expect(list.stdout).toContain(name);
    const one = await runScript('scripts/ops.ts', ['help', 'set-credit-limit'], env());
    expect(one.stdout).toContain('npm run ops -- set-credit-limit <userId> <dollars.cents> --reason');
    const unknown = await runScript('scripts/ops.ts', ['frobnicate'], env());
    expect({ code: unknown.code, stderr: unknown.stderr.trim().split('\n').length }).toEqual({
      code: 2,
      stderr: 1,
    });

    const { cardId } = await cachedUser();
    const run = await runScript(
      'scripts/ops.ts',
      ['freeze-card', cardId, '--reason', 'chargeback fraud', '--actor', 'carol-ops'],
      env(),
    );
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await lastAudit(cardId)).toMatchObject({
      actor: 'carol-ops',
      data: { reason: 'chargeback fraud' },
    });
  }, 120_000); // four child processes under tsx: ~15 s each on the shared, loaded 2-core machine
});
