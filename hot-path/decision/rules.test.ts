// Proves there is one set of decision rules: fast-check generates rule inputs, each is laid out in a real
// Redis exactly as the cache holds it and decided by the DECIDE Lua script, and decided by `evaluateRules`
// (what the Postgres fallback calls); both must give the same reason and the same granted amount.
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUTH_STATE, BLOCKED_MCCS_SEPARATOR } from '../../shared/policy/redis-fields.ts';
import { evaluateRules, type RuleInput } from '../../shared/policy/rules.ts';
import { type CardState, encodeCard, utcDay } from '../../shared/redis/account.ts';
import { createRedis, type Redis } from '../../shared/redis/client.ts';
import { ACCOUNT, userKeys } from '../../shared/redis/keys.ts';
import { runScript } from '../../shared/redis/script.ts';
import { deletePrefix } from '../../test/support/db.ts';
import { redisClusterNodes, redisUrl } from '../../test/support/env.ts';
import { DECIDE } from './lua.ts';

const prefix = `rules${randomUUID().slice(0, 8)}:`;
let redis: Redis;

beforeAll(() => {
  redis = createRedis({ url: redisUrl(), clusterNodes: redisClusterNodes() });
});

afterAll(async () => {
  await deletePrefix(redis, prefix);
  redis.disconnect();
});

const cents = (max: number) => fc.bigInt({ min: 0n, max: BigInt(max) });
const MCCS = ['5411', '5812', '7995', '6011', '4511'] as const;
/**
 * What a request may carry besides: Stripe's schema allows any string up to 8 characters, so an empty
 * code and one with the blocked list's separator in it are decided too (never blocked: no user blocks
 * them, the controls accept 4-digit codes only).
 */
const ODD_MCCS = ['', '5411,5812'] as const;

const ruleInput: fc.Arbitrary<RuleInput> = fc.record({
  cardKnown: fc.boolean(),
  cardStatus: fc.constantFrom('active', 'active', 'active', 'inactive', 'canceled'),
  cardFrozen: fc.boolean(),
  accountStatus: fc.constantFrom('active', 'active', 'active', 'suspended', 'closed'),
  merchantCategoryCode: fc.constantFrom(...MCCS, ...ODD_MCCS),
  globallyBlockedMccs: fc.subarray([...MCCS], { maxLength: 2 }).map((list) => new Set(list)),
  userBlockedMccs: fc.subarray([...MCCS], { maxLength: 2 }),
  authorizationTerminal: fc.boolean(),
  decisionsLastMinute: fc.integer({ min: 0, max: 6 }),
  velocityLimitPerMin: fc.integer({ min: 1, max: 6 }),
  spentTodayCents: cents(2_000_000),
  dailyLimitCents: cents(2_000_000),
  capCents: cents(5_000_000),
  debtOnchainCents: cents(1_000_000),
  unsettledCents: cents(1_000_000),
  holdsCents: cents(1_000_000),
  anyPriceStale: fc.boolean(),
  amountCents: cents(1_000_000_000),
  amountControllable: fc.boolean(),
});

/** Lays `input` out in Redis as the cache holds it and runs DECIDE; returns its reason and grant. */
async function decideInLua(input: RuleInput): Promise<{ reason: string; grantedCents: bigint }> {
  const userId = randomUUID();
  const keys = userKeys(prefix, userId);
  const cardId = `ic_${userId.slice(0, 8)}`;
  const authorizationId = `iauth_${userId.slice(0, 8)}`;
  const nowMs = Date.now();
  const daySpend = keys.daySpend(utcDay(nowMs));
  const setup = redis.multi();
  setup.hset(keys.account, {
    [ACCOUNT.version]: '1',
    [ACCOUNT.status]: input.accountStatus,
    [ACCOUNT.blockedMccs]: input.userBlockedMccs.join(BLOCKED_MCCS_SEPARATOR),
    [ACCOUNT.debtOnchainCents]: input.debtOnchainCents.toString(),
    [ACCOUNT.unsettledCents]: input.unsettledCents.toString(),
    [ACCOUNT.holdsCents]: input.holdsCents.toString(),
    [ACCOUNT.dailyLimitCents]: input.dailyLimitCents.toString(),
  });
  if (input.cardKnown)
    setup.hset(
      keys.cards,
      cardId,
      encodeCard({ status: input.cardStatus as CardState['status'], frozen: input.cardFrozen }),
    );
  if (input.authorizationTerminal) setup.hset(keys.authState(authorizationId), AUTH_STATE.terminal, '1');
  for (let i = 0; i < input.decisionsLastMinute; i++) setup.zadd(keys.velocity, nowMs - 1_000 - i, `d${i}`);
  setup.set(daySpend, input.spentTodayCents.toString());
  await setup.exec();
  const reply = await runScript<[string, string, string, string]>(
    redis,
    DECIDE,
    [
      keys.account,
      keys.cards,
      keys.holds,
      keys.holdExpiries,
      keys.decision(`evt_${userId}`),
      daySpend,
      keys.velocity,
      keys.outbox,
      keys.authState(authorizationId),
    ],
    [
      '1',
      cardId,
      authorizationId,
      input.amountCents.toString(),
      input.amountControllable ? '1' : '0',
      input.merchantCategoryCode,
      nowMs,
      input.capCents.toString(),
      input.anyPriceStale ? '1' : '0',
      input.velocityLimitPerMin,
      input.globallyBlockedMccs.has(input.merchantCategoryCode) ? '1' : '0',
      `dec_${userId}`,
      nowMs + 86_400_000,
      60,
      '{}',
      1e10 + Math.floor(nowMs / 1000),
      60,
    ],
  );
  expect(reply[0]).toBe('ok');
  return { reason: reply[3], grantedCents: BigInt(reply[2]) };
}

describe('one set of decision rules', () => {
  it('DECIDE (Lua, in Redis) and evaluateRules (TypeScript) give the same reason and amount', async () => {
    await fc.assert(
      fc.asyncProperty(ruleInput, async (input) => {
        const lua = await decideInLua(input);
        const ts = evaluateRules(input);
        expect(lua).toEqual({ reason: ts.reason, grantedCents: ts.grantedCents });
      }),
      { numRuns: 400 },
    );
    await deletePrefix(redis, prefix);
  });

  it('agrees on the edges: exactly the available amount, one cent more, partial at the daily limit, odd merchant codes', async () => {
    const base: RuleInput = {
      cardKnown: true,
      cardStatus: 'active',
      cardFrozen: false,
      accountStatus: 'active',
      merchantCategoryCode: '5411',
      globallyBlockedMccs: new Set(),
      userBlockedMccs: [],
      authorizationTerminal: false,
      decisionsLastMinute: 0,
      velocityLimitPerMin: 5,
      spentTodayCents: 0n,
      dailyLimitCents: 10_000n,
      capCents: 5_000n,
      debtOnchainCents: 1_000n,
      unsettledCents: 1_000n,
      holdsCents: 1_000n,
      anyPriceStale: false,
      amountCents: 2_000n,
      amountControllable: false,
    };
    const cases: RuleInput[] = [
      base,
      { ...base, amountCents: 2_001n },
      { ...base, amountCents: 2_001n, amountControllable: true },
      { ...base, amountCents: 2_001n, anyPriceStale: true },
      { ...base, spentTodayCents: 9_000n, amountControllable: true },
      { ...base, spentTodayCents: 10_000n, amountControllable: true },
      { ...base, decisionsLastMinute: 5 },
      { ...base, merchantCategoryCode: '' },
      { ...base, merchantCategoryCode: '5411,5812', userBlockedMccs: ['5411', '5812'] },
      { ...base, merchantCategoryCode: '5812', userBlockedMccs: ['5411', '5812'] },
    ];
    const reasons: string[] = [];
    for (const input of cases) {
      const lua = await decideInLua(input);
      expect(lua).toEqual(evaluateRules(input));
      reasons.push(`${lua.reason}:${lua.grantedCents}`);
    }
    expect(reasons).toEqual([
      'approved:2000',
      'insufficient_credit:0',
      'partial:2000',
      'stale_price:0',
      'partial:1000',
      'daily_limit:0',
      'velocity_limit:0',
      'approved:2000',
      'approved:2000',
      'blocked_mcc:0',
    ]);
  });
});
