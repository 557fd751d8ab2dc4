// Proves a signed-in cardholder gets withdrawal approvals from the service for themselves only, on real Postgres, Redis, a Hardhat chain and the Supabase bridge: a sign-up's token (HS256, the configured secret) gets a payable approval for the financial user of the same uuid; no, expired, wrong-audience, wrong-issuer, wrong-secret or internal tokens get 401 and nothing is signed; a body naming another user is ignored; an unbridged user is refused user_not_linked; a per-user counter caps requests; the internal route still works beside it; no verifier, no route.
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import postgres from 'postgres';
import type { Address, Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indexer } from '../indexer/runtime/index.ts';
import {
  type ChainHarness,
  localAccount,
  ROLES,
  seedAssets,
  seedUser,
  startChainHarness,
} from '../scripts/chain/harness.ts';
import { createTestIndexer, silentLogger } from '../scripts/chain/testing.ts';
import { supabaseIssuer, tokenVerifierFromConfig } from '../shared/auth/from-config.ts';
import type { TokenVerifier } from '../shared/auth/verify-token.ts';
import { testTokenAbi } from '../shared/chain/contracts/index.ts';
import { loadConfig } from '../shared/config.ts';
import { userKeys } from '../shared/redis/keys.ts';
import { defaultSyncLimits } from '../supabase/sync/limits.ts';
import { createSyncMetrics } from '../supabase/sync/metrics.ts';
import { createUserBridge, type UserBridge } from '../supabase/sync/user-bridge.ts';
import { createSupabaseTestDatabase, type SupabaseTestDatabase, signUp } from '../supabase/tests/harness.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { withdrawalApp } from './app.ts';

const ETH = 10n ** 18n;
const DELAY_S = 30;
const SUPABASE_URL = 'http://127.0.0.1:54321';
// The Supabase CLI's well-known local secret (a PUBLIC_SECRETS entry: accepted with NODE_ENV=test only).
const SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';
const INTERNAL = 'internal-token-of-the-user-route-test';

let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let sb: SupabaseTestDatabase;
let bridgeSql: postgres.Sql;
let bridge: UserBridge;
let verifier: TokenVerifier;
let nextWallet = 4;

const sql = () => services.database.sql;
const deps = () => ({
  sql: services.sqlFor('credana_withdrawals'),
  redis: services.redis,
  prefix: services.prefix,
  client: chain.publicClient,
  contracts: chain.contracts,
  signer: privateKeyToAccount(localAccount(ROLES.deployer).privateKey),
  logger: silentLogger,
});

async function token(
  sub: string,
  options: { secret?: string; aud?: string; iss?: string; expS?: number } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub, role: 'authenticated', email: `${sub.slice(0, 8)}@example.test` })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(options.iss ?? supabaseIssuer(SUPABASE_URL))
    .setAudience(options.aud ?? 'authenticated')
    .setIssuedAt(now - 10)
    .setExpirationTime(options.expS ?? now + 3600)
    .sign(new TextEncoder().encode(options.secret ?? SECRET));
}

type App = ReturnType<typeof withdrawalApp>;

function askAsUser(app: App, authorization: string | null, body: unknown): Promise<Response> {
  return Promise.resolve(
    app.request('/me/withdrawals/approvals', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(authorization === null ? {} : { authorization }),
      },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  );
}

async function approvalsOf(userId: string): Promise<number> {
  const [row] = await sql()<{ n: number }[]>`
    select count(*)::int as n from withdrawal_approvals where user_id = ${userId}`;
  return row?.n ?? -1;
}

async function sync(confirm = false): Promise<void> {
  if (confirm) await chain.mine(2);
  await indexer.syncToHead();
}

/** Links a fresh wallet to the financial user, deposits 1 WETH and (optionally) requests `pending` back. */
async function fund(userId: string, pending: bigint): Promise<Address> {
  const wallet = chain.account(nextWallet++);
  await sql()`insert into wallets (chain_id, address, user_id)
    values (${chain.contracts.chainId}, ${wallet.toLowerCase()}, ${userId})`;
  await chain.deposit(wallet, 'WETH', ETH);
  await sync(true);
  if (pending > 0n) {
    await chain.requestWithdrawal(wallet, 'WETH', pending);
    await sync();
  }
  return wallet;
}

/** A financial user (as seeded by the chain tests), with 1 WETH deposited and `pending` requested. */
async function seededUser(pending: bigint): Promise<string> {
  const userId = await seedUser(sql(), { chainId: chain.contracts.chainId });
  await fund(userId, pending);
  return userId;
}

beforeAll(async () => {
  [services, chain, sb] = await Promise.all([
    setUpServices(),
    startChainHarness({ withdrawalDelayS: DELAY_S }),
    createSupabaseTestDatabase(),
  ]);
  await seedAssets(sql(), chain.contracts);
  ({ indexer } = createTestIndexer(services, chain, { confirmations: 2 }));
  await sync(true);
  bridgeSql = postgres(sb.url, { max: 2, onnotice: () => {} });
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
    limits: { ...defaultSyncLimits, bridgeLockRetryMs: 50, bridgePollIntervalMs: 60_000 },
    metrics: createSyncMetrics(),
    logger: { info() {}, warn() {}, error() {} },
  });
  await bridge.start();
  // The verifier exactly as the service builds it from its environment.
  const configured = tokenVerifierFromConfig(
    loadConfig({ NODE_ENV: 'test', SUPABASE_URL, SUPABASE_JWT_SECRET: SECRET }),
  );
  if (configured === null) throw new Error('no verifier from a config with SUPABASE_JWT_SECRET');
  verifier = configured;
});

afterAll(async () => {
  await bridge?.stop();
  await bridgeSql?.end({ timeout: 5 });
  await indexer?.stop();
  await chain?.stop();
  await sb?.close();
  await services?.close();
});

describe('POST /me/withdrawals/approvals', () => {
  it('approves a signed-up user’s own pending withdrawal: the token’s sub is the financial user id, and the vault pays on it', async () => {
    const app = withdrawalApp(deps(), { internalApiToken: INTERNAL, verifier });
    const userId = await signUp(sb.sql); // Supabase Auth's sign-up: auth.users.id
    // The bridge creates the financial user with the same uuid: that is the whole mapping.
    for (let i = 0; i < 400; i++) {
      if ((await sql()`select 1 from users where id = ${userId}`).length === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect((await sql()`select id from users where id = ${userId}`).map((r) => r['id'])).toEqual([userId]);
    const wallet = await fund(userId, ETH / 2n);

    const answer = await askAsUser(app, `Bearer ${await token(userId)}`, { assetId: 'WETH' });
    expect(answer.status).toBe(200);
    const body = (await answer.json()) as {
      user: string;
      amount: string;
      deadline: string;
      signature: Hex;
    };
    expect(body.user.toLowerCase()).toBe(wallet.toLowerCase());
    expect(body.amount).toBe((ETH / 2n).toString());
    expect(await approvalsOf(userId)).toBe(1);
    await chain.testClient.increaseTime({ seconds: DELAY_S + 1 });
    await chain.finalizeWithdrawalWith(wallet, 'WETH', BigInt(body.deadline), body.signature);
    const balance = (await chain.publicClient.readContract({
      address: chain.token('WETH'),
      abi: testTokenAbi,
      functionName: 'balanceOf',
      args: [wallet],
    })) as bigint;
    expect(balance).toBe(ETH / 2n);
  });

  it('answers 401 and signs nothing without a valid token; the same user with a valid one is approved', async () => {
    const app = withdrawalApp(deps(), { internalApiToken: INTERNAL, verifier });
    const userId = await seededUser(ETH / 4n);
    const past = Math.floor(Date.now() / 1000) - 120;
    const refused: [string, string | null, string][] = [
      ['no header', null, 'token_missing'],
      ['expired', `Bearer ${await token(userId, { expS: past })}`, 'token_expired'],
      ['wrong audience', `Bearer ${await token(userId, { aud: 'anon' })}`, 'audience_mismatch'],
      [
        'wrong issuer',
        `Bearer ${await token(userId, { iss: 'https://evil.example/auth/v1' })}`,
        'issuer_mismatch',
      ],
      [
        'wrong secret',
        `Bearer ${await token(userId, { secret: 'another-secret-that-is-also-32-characters-long' })}`,
        'signature_invalid',
      ],
      ['the internal token', `Bearer ${INTERNAL}`, 'token_malformed'],
    ];
    for (const [what, authorization, code] of refused) {
      const answer = await askAsUser(app, authorization, { assetId: 'WETH' });
      expect([what, answer.status, await answer.json()]).toEqual([what, 401, { error: code }]);
    }
    expect(await approvalsOf(userId)).toBe(0);
    const ok = await askAsUser(app, `Bearer ${await token(userId)}`, { assetId: 'WETH' });
    expect(ok.status).toBe(200);
    expect(await approvalsOf(userId)).toBe(1);
  });

  it('takes the user from the token only: a body naming another user is ignored; the internal route still serves that user', async () => {
    const app = withdrawalApp(deps(), { internalApiToken: INTERNAL, verifier });
    const victim = await seededUser(ETH / 2n);
    const attacker = await seededUser(0n); // a vault account, no pending withdrawal
    const answer = await askAsUser(app, `Bearer ${await token(attacker)}`, {
      assetId: 'WETH',
      userId: victim,
    });
    expect([answer.status, await answer.json()]).toEqual([
      409,
      { approved: false, reason: 'no_pending_withdrawal' },
    ]);
    expect(await approvalsOf(victim)).toBe(0);
    expect(await approvalsOf(attacker)).toBe(0);

    const internal = await app.request('/withdrawals/approvals', {
      method: 'POST',
      headers: { authorization: `Bearer ${INTERNAL}`, 'content-type': 'application/json' },
      body: JSON.stringify({ userId: victim, assetId: 'WETH' }),
    });
    expect(internal.status).toBe(200);
    expect(await approvalsOf(victim)).toBe(1);
  });

  it('refuses a user the bridge has not linked (user_not_linked), and one with no wallet (no_vault_account)', async () => {
    const app = withdrawalApp(deps(), { internalApiToken: INTERNAL, verifier });
    const unlinked = randomUUID(); // a valid Supabase token for a user the financial database lacks
    const answer = await askAsUser(app, `Bearer ${await token(unlinked)}`, { assetId: 'WETH' });
    expect([answer.status, await answer.json()]).toEqual([
      409,
      { approved: false, reason: 'user_not_linked' },
    ]);
    const walletless = await seedUser(sql(), { chainId: chain.contracts.chainId });
    const none = await askAsUser(app, `Bearer ${await token(walletless)}`, { assetId: 'WETH' });
    expect([none.status, await none.json()]).toEqual([409, { approved: false, reason: 'no_vault_account' }]);
  });

  it('validates and bounds the body: 400 for a bad asset id or no JSON, 413 for a large body', async () => {
    const app = withdrawalApp(deps(), { internalApiToken: INTERNAL, verifier });
    const userId = await seedUser(sql(), { chainId: chain.contracts.chainId });
    const bearer = `Bearer ${await token(userId)}`;
    const bad = await askAsUser(app, bearer, { assetId: 'weth; drop' });
    expect([bad.status, await bad.json()]).toEqual([400, { error: 'invalid_request' }]);
    const notJson = await askAsUser(app, bearer, 'not json');
    expect(notJson.status).toBe(400);
    const huge = await askAsUser(app, bearer, { assetId: 'WETH', padding: 'x'.repeat(100_000) });
    expect([huge.status, await huge.json()]).toEqual([413, { error: 'body_too_large' }]);
  });

  it('caps each user’s requests per window (429 with Retry-After, nothing signed); other users are unaffected', async () => {
    const app = withdrawalApp(deps(), {
      internalApiToken: INTERNAL,
      verifier,
      userRoute: { requestsMax: 2, windowS: 60 },
    });
    const looping = await seededUser(ETH / 4n);
    const other = await seededUser(ETH / 4n);
    const bearer = `Bearer ${await token(looping)}`;
    expect((await askAsUser(app, bearer, { assetId: 'WETH' })).status).toBe(200);
    expect((await askAsUser(app, bearer, { assetId: 'WETH' })).status).toBe(200);
    const third = await askAsUser(app, bearer, { assetId: 'WETH' });
    expect([third.status, await third.json()]).toEqual([429, { error: 'rate_limited' }]);
    const retryAfterS = Number(third.headers.get('retry-after'));
    expect(retryAfterS).toBeGreaterThanOrEqual(1);
    expect(retryAfterS).toBeLessThanOrEqual(60);
    expect(await approvalsOf(looping)).toBe(2);
    // The counter expires with its window.
    const ttlS = await services.redis.ttl(userKeys(services.prefix, looping).withdrawalRequests);
    expect(ttlS).toBeGreaterThan(0);
    expect(ttlS).toBeLessThanOrEqual(60);
    expect((await askAsUser(app, `Bearer ${await token(other)}`, { assetId: 'WETH' })).status).toBe(200);
  });

  it('is not mounted without a verifier', async () => {
    expect(tokenVerifierFromConfig(loadConfig({ NODE_ENV: 'test' }))).toBeNull();
    const app = withdrawalApp(deps(), { internalApiToken: INTERNAL, verifier: null });
    const userId = await seededUser(ETH / 4n);
    const answer = await askAsUser(app, `Bearer ${await token(userId)}`, { assetId: 'WETH' });
    expect(answer.status).toBe(404);
    expect(await approvalsOf(userId)).toBe(0);
  });
});
