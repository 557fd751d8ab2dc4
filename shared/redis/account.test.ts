// Proves a cache rebuild can never install a Postgres snapshot older than a change a writer made
// meanwhile (the freeze race): the change counter makes the stale install fail and the retry see the freeze.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedUser } from '../../test/support/fixtures.ts';
import {
  accountFromPostgres,
  applyCardControls,
  ensureAccount,
  installAccount,
  readChanges,
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
    expect(await applyCardControls(services.redis, services.prefix, userId, { frozen: true })).toBe(false);
    expect(await installAccount(services.redis, services.prefix, stale!, now, changesBefore)).toBe('changed');
    expect(await services.redis.exists(userKeys(services.prefix, userId).account)).toBe(0);
    expect(await ensureAccount(services.redis, sql, services.prefix, userId, now)).toBe(true);
    expect(await services.redis.hget(userKeys(services.prefix, userId).cards, cardId)).toBe('active|1');
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
});
