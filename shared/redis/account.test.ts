// Proves a cache rebuild can never install a Postgres snapshot older than a change a writer made
// meanwhile (the freeze race), that a controls write arriving after a newer one is refused (by the controls
// version), and that the bulk warm-up builds missing accounts without touching cached ones.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedUser } from '../../test/support/fixtures.ts';
import { userControls } from '../db/queries/controls.ts';
import {
  accountFromPostgres,
  ensureAccount,
  installAccount,
  readChanges,
  warmAccounts,
  writeControls,
} from './account.ts';
import { userKeys } from './keys.ts';

let services: TestServices;
beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await services?.close();
});

describe('cache rebuild against concurrent writers', () => {
  it('refuses a snapshot taken before a freeze, and the retry installs the frozen card', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql, {});
    const now = Date.now();
    const changesBefore = await readChanges(services.redis, services.prefix, userId);
    const stale = await accountFromPostgres(sql, userId, now);
    // The bridge freezes the card: Postgres first, then the cache (which is not built yet).
    await sql`update cards set frozen = true where id = ${cardId}`;
    const controls = await userControls(sql, userId, now);
    expect(await writeControls(services.redis, services.prefix, controls!)).toBe('not_cached');
    expect(await installAccount(services.redis, services.prefix, stale!, now, changesBefore)).toBe('changed');
    expect(await services.redis.exists(userKeys(services.prefix, userId).account)).toBe(0);
    expect(await ensureAccount(services.redis, sql, services.prefix, userId, now)).toBe(true);
    expect(await services.redis.hget(userKeys(services.prefix, userId).cards, cardId)).toBe('active|1');
  });

  it('keeps the newest controls when two writers write to Redis out of commit order', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql, {});
    await ensureAccount(services.redis, sql, services.prefix, userId);
    // Writer 1 commits an ops freeze and reads its controls; writer 2 commits the unfreeze after it.
    await sql`update cards set ops_frozen = true where id = ${cardId}`;
    await sql`update users set controls_version = controls_version + 1 where id = ${userId}`;
    const older = await userControls(sql, userId, Date.now());
    await sql`update cards set ops_frozen = false where id = ${cardId}`;
    await sql`update users set controls_version = controls_version + 1 where id = ${userId}`;
    const newer = await userControls(sql, userId, Date.now());
    // Writer 2's Redis write arrives first; writer 1's late write must not bring the freeze back.
    expect(await writeControls(services.redis, services.prefix, newer!)).toBe('written');
    expect(await writeControls(services.redis, services.prefix, older!)).toBe('stale');
    expect(await services.redis.hget(userKeys(services.prefix, userId).cards, cardId)).toBe('active|0');
  });

  it('installs once and reports an account that is already present', async () => {
    const { sql } = services.database;
    const { userId } = await seedUser(sql, {});
    const now = Date.now();
    const changes = await readChanges(services.redis, services.prefix, userId);
    const snapshot = await accountFromPostgres(sql, userId, now);
    expect(await installAccount(services.redis, services.prefix, snapshot!, now, changes)).toBe('installed');
    expect(await installAccount(services.redis, services.prefix, snapshot!, now, changes)).toBe('present');
  });

  it('warms every user without a cached account, holds included, and leaves cached ones alone', async () => {
    const { sql } = services.database;
    const { userId: a } = await seedUser(sql, {});
    const { userId: b } = await seedUser(sql, {});
    await sql`insert into authorizations (id, user_id, card_id, status, approved, requested_cents, approved_cents, held_cents,
        decision, decision_source, expires_at)
      values ('iauth_warm_1', ${b}, 'ic_x', 'pending', true, 700, 700, 700, 'approved', 'redis', now() + interval '1 day')`;
    await sql`update credit_accounts set holds_cents = 700 where user_id = ${b}`;
    await services.redis.hset(userKeys(services.prefix, a).account, 'v', '1', 'hold', '42');
    const first = await warmAccounts(services.redis, sql, services.prefix);
    expect(first.installed).toBeGreaterThanOrEqual(1);
    expect(await services.redis.hget(userKeys(services.prefix, b).account, 'hold')).toBe('700');
    expect(await services.redis.hget(userKeys(services.prefix, b).holds, 'iauth_warm_1')).toBe('700');
    // The already cached account was not overwritten.
    expect(await services.redis.hget(userKeys(services.prefix, a).account, 'hold')).toBe('42');
    expect((await warmAccounts(services.redis, sql, services.prefix)).installed).toBe(0);
  });
});
