// Proves the authorization webhook end to end on real Redis and Postgres: signatures, every rule and
// decline reason, partial and incremental approvals, idempotent replays, exact arithmetic at the edges.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeys } from '../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedAsset, seedUser, setPrice, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import { type HotPath, post, startHotPath } from '../test/support/hot-path.ts';
import { authorizationRequest, sign, TEST_WEBHOOK_SECRET } from '../test/support/stripe.ts';

const PRICE = 300_000_000_000n; // $3,000.00000000
let services: TestServices;
let hotPath: HotPath;
const nowS = () => Math.floor(Date.now() / 1000);

beforeAll(async () => {
  services = await setUpServices();
  await seedAsset(services.database.sql, services.redis, services.prefix, WETH, PRICE, nowS());
  hotPath = await startHotPath(services, { BLOCKED_MCCS: '7995', VELOCITY_LIMIT_PER_MIN: '5' });
});

afterAll(async () => {
  await hotPath?.close();
  await services?.close();
});

/** A user whose borrow power is exactly `cents`. */
async function userWithPower(cents: bigint, extra: Parameters<typeof seedUser>[1] = {}) {
  return seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(cents, PRICE) }],
    ...extra,
  });
}

const authorize = (body: unknown, options = {}) => post(hotPath, '/stripe/authorizations', body, options);

describe('signature verification', () => {
  it('accepts a valid signature and answers with the Stripe-Version header', async () => {
    const { cardId } = await userWithPower(10_000n);
    const res = await authorize(authorizationRequest({ cardId, amountCents: 100 }));
    expect(res.status).toBe(200);
    expect(res.headers.get('stripe-version')).toBe('2025-03-31.basil');
    expect(res.json.approved).toBe(true);
  });

  it('refuses a wrong secret, an expired or future timestamp, a tampered body and a missing header, recording nothing', async () => {
    const { cardId, userId } = await userWithPower(10_000n);
    const body = authorizationRequest({ cardId, amountCents: 100 });
    const raw = JSON.stringify(body);
    const wrong = await authorize(raw, { secret: 'whsec_someone_elses_secret_000000' });
    const expired = await authorize(raw, { timestampS: nowS() - 301 });
    const future = await authorize(raw, { timestampS: nowS() + 301 });
    const tampered = await authorize(raw.replace('"amount":100', '"amount":1'), { signature: sign(raw) });
    const missing = await authorize(raw, { signature: null });
    for (const res of [wrong, expired, future, tampered, missing]) expect(res.status).toBe(400);
    expect(missing.json.error).toBe('missing_header');
    expect(expired.json.error).toBe('expired');
    // Nothing reserved, nothing queued.
    const keys = userKeys(services.prefix, userId);
    expect(await services.redis.exists(keys.decision(body.id))).toBe(0);
    expect(await services.redis.hget(keys.account, 'hold')).toBeNull();
  });

  it('accepts a header with two v1 signatures during a secret roll when either secret is configured', async () => {
    const rolled = await startHotPath(services, {
      STRIPE_WEBHOOK_SECRETS: `whsec_the_new_secret_after_roll_1,${TEST_WEBHOOK_SECRET}`,
    });
    try {
      const { cardId } = await userWithPower(10_000n);
      const raw = JSON.stringify(authorizationRequest({ cardId, amountCents: 100 }));
      const t = nowS();
      const oldSig = sign(raw, TEST_WEBHOOK_SECRET, t);
      const newSig = sign(raw, 'whsec_the_new_secret_after_roll_1', t);
      const header = `t=${t},v1=${newSig.split('v1=')[1]},v1=${oldSig.split('v1=')[1]}`;
      const res = await post(rolled, '/stripe/authorizations', raw, { signature: header });
      expect(res.status).toBe(200);
      expect(res.json.approved).toBe(true);
      // Only the old secret's signature present, old secret still configured: accepted.
      const onlyOld = await post(
        rolled,
        '/stripe/authorizations',
        JSON.stringify(authorizationRequest({ cardId, amountCents: 1 })),
      );
      expect(onlyOld.status).toBe(200);
    } finally {
      await rolled.close();
    }
  });

  it('answers 413 above the body limit', async () => {
    const big = JSON.stringify({ pad: 'x'.repeat(70_000) });
    const res = await authorize(big);
    expect(res.status).toBe(413);
  });
});

describe('decision rules', () => {
  it('declines each rule with its stable reason code', async () => {
    const sql = services.database.sql;
    const cases: [
      string,
      Promise<{ cardId: string }>,
      Partial<Parameters<typeof authorizationRequest>[0]>,
    ][] = [
      ['card_inactive', userWithPower(10_000n, { cards: [{ status: 'inactive' }] }), {}],
      ['card_frozen', userWithPower(10_000n, { cards: [{ frozen: true }] }), {}],
      ['blocked_mcc', userWithPower(10_000n), { mcc: '7995' }],
      ['blocked_mcc', userWithPower(10_000n, { blockedMccs: ['5812'] }), { mcc: '5812' }],
      ['daily_limit', userWithPower(10_000n, { dailyLimitCents: 99n }), {}],
      ['insufficient_credit', userWithPower(99n), {}],
      ['insufficient_credit', userWithPower(10_000n, { creditLimitCents: 99n }), {}],
      ['insufficient_credit', userWithPower(10_000n, { unsettledCents: 9_901n }), {}],
    ];
    for (const [reason, seeded, extra] of cases) {
      const { cardId } = await seeded;
      const res = await authorize(authorizationRequest({ cardId, amountCents: 100, ...extra }));
      expect(res.status).toBe(200);
      expect({ reason, body: res.json }).toEqual({
        reason,
        body: { approved: false, metadata: { decision_id: expect.any(String), reason } },
      });
    }
    const unknown = await authorize(authorizationRequest({ cardId: 'ic_nobody', amountCents: 100 }));
    expect(unknown.json).toMatchObject({ approved: false, metadata: { reason: 'unknown_card' } });
    const suspended = await userWithPower(10_000n);
    await sql`update users set status = 'suspended' where id = ${suspended.userId}`;
    expect(
      (await authorize(authorizationRequest({ cardId: suspended.cardId, amountCents: 1 }))).json,
    ).toMatchObject({
      metadata: { reason: 'account_inactive' },
    });
  });

  it('declines the request after the velocity limit within a minute', async () => {
    const { cardId } = await userWithPower(100_000n);
    const reasons: unknown[] = [];
    for (let i = 0; i < 6; i++)
      reasons.push((await authorize(authorizationRequest({ cardId, amountCents: 1 }))).json.metadata);
    expect(reasons.slice(0, 5).every((m) => (m as { reason: string }).reason === 'approved')).toBe(true);
    expect(reasons[5]).toMatchObject({ reason: 'velocity_limit' });
  });

  it('counts a stale price as zero and says so', async () => {
    const sql = services.database.sql;
    const STALE = { ...WETH, assetId: 'OLDT' };
    await seedAsset(sql, services.redis, services.prefix, STALE, PRICE, nowS() - 3_601);
    await hotPath.market.reload();
    const { cardId } = await seedUser(sql, { collateral: [{ assetId: 'OLDT', amountBase: 10n ** 18n }] });
    const res = await authorize(authorizationRequest({ cardId, amountCents: 100 }));
    expect(res.json).toMatchObject({ approved: false, metadata: { reason: 'stale_price' } });
    // The same feed refreshed: approved.
    await setPrice(sql, services.redis, services.prefix, 'OLDT', PRICE, nowS());
    await hotPath.market.reload();
    expect((await authorize(authorizationRequest({ cardId, amountCents: 100 }))).json.approved).toBe(true);
  });

  it('approves exactly up to a 1-cent margin and holds exactly that', async () => {
    const { cardId, userId } = await userWithPower(10_000n);
    expect((await authorize(authorizationRequest({ cardId, amountCents: 10_001 }))).json.approved).toBe(
      false,
    );
    expect((await authorize(authorizationRequest({ cardId, amountCents: 10_000 }))).json.approved).toBe(true);
    expect((await authorize(authorizationRequest({ cardId, amountCents: 1 }))).json).toMatchObject({
      approved: false,
      metadata: { reason: 'insufficient_credit' },
    });
    expect(await services.redis.hget(userKeys(services.prefix, userId).account, 'hold')).toBe('10000');
  });

  it('stays exact with very large 18-decimal collateral (beyond 2^53 base units) capped by the credit limit', async () => {
    // 10^12 WETH: base units ≈ 10^30, far beyond a double's exact range; the limit caps the power.
    const { cardId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: 10n ** 30n }],
      creditLimitCents: 9_007_199_254_740_000n,
      dailyLimitCents: 9_007_199_254_740_000n,
    });
    const res = await authorize(authorizationRequest({ cardId, amountCents: 999_999_999 }));
    expect(res.json.approved).toBe(true);
  });

  it('approves partially when the amount is controllable, and answers the amount only then', async () => {
    const { cardId, userId } = await userWithPower(6_000n);
    const partial = await authorize(
      authorizationRequest({ cardId, amountCents: 17_500, controllable: true, mcc: '5542' }),
    );
    expect(partial.json).toEqual({
      approved: true,
      amount: 6_000,
      metadata: { decision_id: expect.any(String), reason: 'partial' },
    });
    expect(await services.redis.hget(userKeys(services.prefix, userId).account, 'hold')).toBe('6000');
    const other = await userWithPower(6_000n);
    const full = await authorize(
      authorizationRequest({ cardId: other.cardId, amountCents: 5_000, controllable: true }),
    );
    expect(full.json).not.toHaveProperty('amount');
    expect(full.json.approved).toBe(true);
  });

  it('adds an incremental authorization to the existing hold', async () => {
    const { cardId, userId } = await userWithPower(10_000n);
    const authorizationId = 'iauth_incremental_0001';
    const first = await authorize(authorizationRequest({ cardId, authorizationId, amountCents: 4_000 }));
    const increment = await authorize(
      authorizationRequest({ cardId, authorizationId, amountCents: 3_000, requestHistory: 1 }),
    );
    const tooMuch = await authorize(
      authorizationRequest({ cardId, authorizationId, amountCents: 3_001, requestHistory: 2 }),
    );
    expect([first.json.approved, increment.json.approved, tooMuch.json.approved]).toEqual([
      true,
      true,
      false,
    ]);
    const keys = userKeys(services.prefix, userId);
    expect(await services.redis.hget(keys.holds, authorizationId)).toBe('7000');
    expect(await services.redis.hget(keys.account, 'hold')).toBe('7000');
  });

  it('returns the first answer to a replayed event and holds nothing new (same event 3×)', async () => {
    const { cardId, userId } = await userWithPower(10_000n);
    const body = authorizationRequest({ cardId, amountCents: 2_500 });
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push((await authorize(body)).json);
    expect(answers[1]).toEqual(answers[0]);
    expect(answers[2]).toEqual(answers[0]);
    const keys = userKeys(services.prefix, userId);
    expect(await services.redis.hget(keys.account, 'hold')).toBe('2500');
    const outbox = await services.redis.xrange(keys.outbox, '-', '+');
    const mine = outbox.filter(([, fields]) => fields[1]?.includes(body.id));
    expect(mine).toHaveLength(1);
  });

  it('approves a card issued after the account was cached (the card is added to the cached account)', async () => {
    const { userId, cardId } = await userWithPower(10_000n);
    expect((await authorize(authorizationRequest({ cardId, amountCents: 100 }))).json.approved).toBe(true);
    const newCard = `ic_issued_later_${userId.slice(0, 8)}`;
    await services.database.sql`insert into cards (id, user_id) values (${newCard}, ${userId})`;
    expect((await authorize(authorizationRequest({ cardId: newCard, amountCents: 100 }))).json).toMatchObject(
      {
        approved: true,
        metadata: { reason: 'approved' },
      },
    );
    expect(await services.redis.hget(userKeys(services.prefix, userId).cards, newCard)).toBe('active|0');
  });

  it('declines a malformed but signed request with 200 and invalid_request', async () => {
    const res = await authorize({ id: 'evt_x', type: 'issuing_authorization.request', data: {} });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ approved: false, metadata: { reason: 'invalid_request' } });
  });
});

describe('operations', () => {
  it('serves healthz, readyz and (on the internal app) metrics with decision counts', async () => {
    expect((await hotPath.app.request('/healthz')).status).toBe(200);
    const ready = await hotPath.app.request('/readyz');
    expect(await ready.json()).toEqual({ ready: true, redis: true, postgres: true, suspect: false });
    const metrics = await (await hotPath.internalApp.request('/metrics')).text();
    expect(metrics).toMatch(
      /credana_decisions_total\{outcome="approved",reason="approved",source="redis",service="hot-path"\} \d+/,
    );
    expect(metrics).toContain('credana_decision_latency_seconds_bucket');
  });
});

describe('failure behaviour', () => {
  it('answers a bug (a key of the wrong type) with a logged bare 500, neither falling back nor making the process suspect', async () => {
    const { cardId, userId } = await userWithPower(10_000n);
    // The account key corrupted into a string: HGETALL answers WRONGTYPE. Not an outage: before, the
    // decision fell back to Postgres and the whole process turned suspect, deciding every user from
    // Postgres until a catch-up.
    const keys = userKeys(services.prefix, userId);
    await services.redis.del(keys.account);
    await services.redis.set(keys.account, 'corrupted');
    const body = authorizationRequest({ cardId, amountCents: 100 });
    const res = await authorize(body);
    expect(res.status).toBe(500);
    expect(res.json).toEqual({ error: 'internal' });
    expect(res.headers.get('x-request-id')).not.toBeNull();
    const [fallback] = await services.database
      .sql`select count(*)::int as n from fallback_decisions where event_id = ${body.id}`;
    expect(fallback?.['n']).toBe(0);
    const ready = await hotPath.app.request('/readyz');
    expect(await ready.json()).toMatchObject({ ready: true, suspect: false });
    const metrics = await (await hotPath.internalApp.request('/metrics')).text();
    expect(metrics).toMatch(/^credana_http_unhandled_errors_total\{service="hot-path"\} 1$/m);
    expect(metrics).not.toMatch(/credana_decision_redis_failures_total\{cause=/);
    // Other users are still decided from Redis.
    const other = await userWithPower(10_000n);
    const fine = await authorize(authorizationRequest({ cardId: other.cardId, amountCents: 100 }));
    expect(fine.json.approved).toBe(true);
  });

  it('counts a bare Error escaping the engine as a bug, not as Redis away', async () => {
    // The engine answers every outage itself; a bare Error that escapes it (as the fallback's lost race
    // with the ledger writer once did) passed the app's onError for ioredis's connection error: logged as
    // "dependency unavailable", counted as no bug.
    const { cardId } = await userWithPower(10_000n);
    const before = await (await hotPath.internalApp.request('/metrics')).text();
    const bugsBefore = Number(
      /^credana_http_unhandled_errors_total\{service="hot-path"\} (\d+)$/m.exec(before)?.[1] ?? 0,
    );
    const decide = hotPath.engine.decide;
    hotPath.engine.decide = () => Promise.reject(new Error('something of ours failed'));
    try {
      const res = await authorize(authorizationRequest({ cardId, amountCents: 100 }));
      expect(res.status).toBe(500);
      expect(res.json).toEqual({ error: 'internal' });
    } finally {
      hotPath.engine.decide = decide;
    }
    const after = await (await hotPath.internalApp.request('/metrics')).text();
    expect(after).toMatch(
      new RegExp(`^credana_http_unhandled_errors_total\\{service="hot-path"\\} ${bugsBefore + 1}$`, 'm'),
    );
  });
});
