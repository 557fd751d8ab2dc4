// Proves the card freeze end to end on real Postgres and Redis: a user freezes their card in Supabase (as PostgREST would run it), and within 1 s the in-process hot path declines the next authorization with card_frozen; after unfreezing it approves again; support's audited freeze (support_freeze_card) travels the same way.
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedAsset, WETH, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPath, post, startHotPath } from '../../test/support/hot-path.ts';
import { authorizationRequest } from '../../test/support/stripe.ts';
import {
  asCaller,
  createSupabaseTestDatabase,
  type SupabaseTestDatabase,
  signUp,
  supportCaller,
  userCaller,
  waitFor,
} from '../tests/harness.ts';
import { defaultSyncLimits } from './limits.ts';
import { createSyncMetrics } from './metrics.ts';
import { createUserBridge, type UserBridge } from './user-bridge.ts';

const PRICE = 300_000_000_000n; // $3,000.00000000
let services: TestServices;
let sb: SupabaseTestDatabase;
let bridgeSql: postgres.Sql;
let bridge: UserBridge;
let hotPath: HotPath;

beforeAll(async () => {
  services = await setUpServices();
  sb = await createSupabaseTestDatabase();
  bridgeSql = postgres(sb.url, { max: 3, onnotice: () => {} });
  bridge = createUserBridge({
    supabase: bridgeSql,
    financial: services.sqlFor('credana_supabase_sync'),
    redis: services.redis,
    redisPrefix: services.prefix,
    defaults: {
      creditLimitCents: 2_500_000n,
      dailyLimitCents: 500_000n,
      dailyLimitCeilingCents: 1_000_000n,
      dailyLimitIncreaseCooldownS: 86_400,
    },
    limits: defaultSyncLimits,
    metrics: createSyncMetrics(),
    logger: { info() {}, warn() {}, error() {} },
  });
  await bridge.start();
  await seedAsset(
    services.database.sql,
    services.redis,
    services.prefix,
    WETH,
    PRICE,
    Math.floor(Date.now() / 1000),
  );
  hotPath = await startHotPath(services, { VELOCITY_LIMIT_PER_MIN: '10000' });
});

afterAll(async () => {
  await hotPath?.close();
  await bridge?.stop();
  await bridgeSql?.end({ timeout: 5 });
  await sb?.close();
  await services?.close();
});

async function setFrozen(userId: string, frozen: boolean): Promise<void> {
  await asCaller(
    sb.sql,
    userCaller(userId),
    (tx) => tx`update public.card_controls set frozen = ${frozen} where user_id = ${userId}`,
    {
      commit: true,
    },
  );
}

const authorize = (cardId: string) =>
  post(hotPath, '/stripe/authorizations', authorizationRequest({ cardId, amountCents: 1_000 }));

describe('freeze in Supabase → the hot path', () => {
  it('declines the next authorization card_frozen within 1 s of the freeze, and approves after unfreezing', async () => {
    // A user signs up (Supabase), the bridge creates the financial user; collateral and a card arrive.
    const userId = await signUp(sb.sql);
    const fin = services.database.sql;
    await waitFor(async () => (await fin`select 1 from users where id = ${userId}`)[0], 1_000);
    await fin`insert into positions (user_id, asset_id, collateral_base)
      values (${userId}, 'WETH', ${wethForBorrowPower(100_000n, PRICE).toString()})`;
    await fin`insert into credit_accounts (user_id) values (${userId})`;
    const cardId = `ic_${userId.slice(0, 12)}`;
    await fin`insert into cards (id, user_id, status) values (${cardId}, ${userId}, 'active')`;

    const before = await authorize(cardId);
    expect(before.json).toMatchObject({ approved: true, metadata: { reason: 'approved' } });

    const frozenAt = performance.now();
    await setFrozen(userId, true);
    // Authorizations keep arriving; the first decline must come within 1 s and say card_frozen.
    const declined = await waitFor(
      async () => {
        const res = await authorize(cardId);
        return res.json.approved === false ? res : undefined;
      },
      1_000,
      10,
    );
    const elapsedMs = performance.now() - frozenAt;
    expect(declined.json.metadata?.reason).toBe('card_frozen');
    expect(elapsedMs).toBeLessThan(1_000);

    const unfrozenAt = performance.now();
    await setFrozen(userId, false);
    const approved = await waitFor(
      async () => {
        const res = await authorize(cardId);
        return res.json.approved === true ? res : undefined;
      },
      1_000,
      10,
    );
    expect(performance.now() - unfrozenAt).toBeLessThan(1_000);
    expect(approved.json.metadata?.reason).toBe('approved');
  });

  it("support's audited freeze reaches the hot path the same way: the next authorization declines card_frozen", async () => {
    const staff = await signUp(sb.sql, { appMetadata: { provider: 'email', role: 'support' } });
    const userId = await signUp(sb.sql);
    const fin = services.database.sql;
    await waitFor(async () => (await fin`select 1 from users where id = ${userId}`)[0], 5_000);
    await fin`insert into positions (user_id, asset_id, collateral_base)
      values (${userId}, 'WETH', ${wethForBorrowPower(100_000n, PRICE).toString()})`;
    await fin`insert into credit_accounts (user_id) values (${userId})`;
    const cardId = `ic_${userId.slice(0, 12)}`;
    await fin`insert into cards (id, user_id, status) values (${cardId}, ${userId}, 'active')`;
    expect((await authorize(cardId)).json.approved).toBe(true);

    await asCaller(
      sb.sql,
      supportCaller(staff),
      (tx) => tx`select public.support_freeze_card(${userId}, ${'cardholder reported the card stolen'})`,
      { commit: true },
    );
    const declined = await waitFor(
      async () => {
        const res = await authorize(cardId);
        return res.json.approved === false ? res : undefined;
      },
      5_000,
      10,
    );
    expect(declined.json.metadata?.reason).toBe('card_frozen');
    const [card] = await fin`select frozen, ops_frozen from cards where id = ${cardId}`;
    expect(card).toEqual({ frozen: true, ops_frozen: false });
  });
});
