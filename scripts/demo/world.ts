/**
 * The demo's view of a running local stack (what `npm run dev` wrote to stack.json, plus the config):
 * signed Stripe requests to the hot path, the chain's actions, the user's available credit as the hot
 * path computes it from the cache, Supabase as a signed-in user, and bounded waits. Every failure is a
 * `DemoError` whose message is the one line the demo prints.
 */
import postgres from 'postgres';
import { type Address, formatUnits } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import {
  type ContractsFile,
  credanaVaultAbi,
  readContractsFile,
} from '../../shared/chain/contracts/index.ts';
import type { Config } from '../../shared/config.ts';
import type { CreditSnapshot } from '../../shared/credit.ts';
import type { Sql } from '../../shared/db/client.ts';
import { formatCents } from '../../shared/money.ts';
import { ensureAccount } from '../../shared/redis/account.ts';
import { createServiceRedis, type Redis, type RedisTarget } from '../../shared/redis/client.ts';
import { ACCOUNT, channels, pricesKey, userKeys } from '../../shared/redis/keys.ts';
import { parsePrice } from '../../shared/redis/market.ts';
import { subscribeToAll } from '../../shared/redis/pubsub.ts';
import { asCaller, signUp, userCaller } from '../../supabase/tests/harness.ts';
import {
  authorizationRequest,
  randomStripeId,
  signPayload,
} from '../../test/support/stripe-issuing-events.ts';
import { approveWithdrawal, type WithdrawalDecision } from '../../withdrawals/index.ts';
import { type ChainActions, connectChain, LOCAL_WITHDRAWAL_SIGNER, localAccount } from '../chain/harness.ts';
import { cachedCredit, silentLogger } from '../chain/testing.ts';
import type { StackSummary, StackUser } from '../dev/stack.ts';

/** A step of the story did not go as told; the message says which and why. */
export class DemoError extends Error {
  readonly code = 'demo_failed';
}

/** Bounds of every wait and request (a busy 2-core machine included). */
export const DEMO_LIMITS = {
  requestTimeoutMs: 5_000,
  /** Indexer: polls every second, then the confirmations. */
  indexerWaitMs: 30_000,
  /** Supabase → bridge → Redis (the design target is 1 s). */
  bridgeWaitMs: 10_000,
  /** Ledger writer → settlement worker (polls every second) → vault → indexer. */
  settlementWaitMs: 60_000,
  /** After a price message reached us, time for the hot path's own subscriber to apply it. */
  priceGraceMs: 200,
  /** Supabase sign-up → the bridge's financial user. */
  signUpWaitMs: 20_000,
  /** Financial database → projection sync (polls every second) → Supabase. */
  projectionWaitMs: 20_000,
  /** Liquidator (polls every 2 s) → vault → receipt, then the indexer. */
  liquidationWaitMs: 60_000,
  /** The withdrawal approval service refuses a request the indexer has not applied yet: asked again. */
  withdrawalIndexWaitMs: 30_000,
} as const;

/** What the signed-in user reads from the dashboard projection (through RLS, as the app does). */
export interface DashboardView {
  availableCents: bigint;
  healthFactor: string | null;
  healthNotice: string | null;
}

export interface LiquidationView {
  id: bigint;
  status: string;
  transactionHash: string | null;
  collateralSeizedBase: bigint;
  debtCoveredUsdc: bigint;
  healthFactorWad: bigint;
}

export interface SwipeInput {
  amountCents: bigint;
  mcc: string;
}

export interface SwipeResult {
  approved: boolean;
  reason: string;
  authorizationId: string;
  createdS: number;
}

export interface PriceView {
  answer: bigint;
  updatedAtS: number;
  decimals: number;
  priceAgeMaxS: number;
}

export interface DemoWorld {
  stack: StackSummary;
  user: StackUser;
  contracts: ContractsFile;
  chain: ChainActions;
  weth: ContractsFile['assets'][number];
  /** The user's available credit as the hot path's next decision would compute it. */
  credit(): Promise<CreditSnapshot>;
  /** The user's WETH collateral in the hot path's cache (after the indexer applied it). */
  cachedCollateral(): Promise<bigint>;
  swipe(input: SwipeInput): Promise<SwipeResult>;
  /** Posts a signed asynchronous event to POST /stripe/events; fails unless it was processed. */
  sendEvent(event: { id: string; type: string }): Promise<void>;
  price(): Promise<PriceView>;
  /** Transmits `answer` on the WETH feed and resolves once the hot path has it (mining confirmations for a rise). */
  pushPrice(answer: bigint): Promise<{ block: bigint; waitedMs: number }>;
  /** Sets `card_controls.frozen` as the user would through Supabase's API; resolves once the hot path's cache has it. */
  setFrozen(frozen: boolean): Promise<{ waitedMs: number }>;
  settlement(ref: string): Promise<{ status: string; transactionHash: string | null } | null>;
  debtOnChainUsdc(): Promise<bigint>;
  collateralOnChain(): Promise<bigint>;
  /**
   * Asks the withdrawal approval service (as the API process would, with the local withdrawal
   * signer's key) to approve the user's pending WETH withdrawal; asks again while the indexer has not
   * applied the request yet.
   */
  approveWithdrawal(): Promise<WithdrawalDecision>;
  /** The user's WETH pending withdrawal in the hot path's cache. */
  cachedPendingWithdrawal(): Promise<bigint>;
  /** The user's dashboard summary as the signed-in user reads it; null before the first projection. */
  dashboard(): Promise<DashboardView | null>;
  /** The user's dashboard activity of one kind, newest first. */
  dashboardActivity(
    kind: string,
  ): Promise<{ id: string; amountCents: string | null; amountBase: string | null }[]>;
  /** The newest row of the liquidator's `liquidations` for the user, if any. */
  latestLiquidation(): Promise<LiquidationView | null>;
  /** Polls `check` until it returns a value; DemoError with `what` after `timeoutMs`. */
  waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | null | undefined>): Promise<T>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Cents of an oracle answer with `decimals` decimals (floored; for people, not for credit). */
export function priceCents(answer: bigint, decimals: number): bigint {
  return decimals >= 2 ? answer / 10n ** BigInt(decimals - 2) : answer * 10n ** BigInt(2 - decimals);
}

export const dollars = formatCents;
export const weth = (amountBase: bigint) => `${formatUnits(amountBase, 18)} WETH`;

async function request(url: string, init: RequestInit, what: string): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(DEMO_LIMITS.requestTimeoutMs) });
  } catch (error) {
    throw new DemoError(
      `${what}: ${url} did not answer within ${DEMO_LIMITS.requestTimeoutMs / 1000} s (${(error as Error).message}); is npm run dev still running?`,
    );
  }
}

/** What the pieces of a demo world share: the stack's connections, the user's keys and the waits. */
interface WorldParts {
  config: Config;
  stack: StackSummary;
  user: StackUser;
  contracts: ContractsFile;
  chain: ChainActions;
  wethAsset: ContractsFile['assets'][number];
  sql: Sql;
  sb: Sql;
  redis: Redis;
  redisTarget: RedisTarget;
  prefix: string;
  keys: ReturnType<typeof userKeys>;
  wallet: Address;
  post: (url: string, body: unknown, what: string) => Promise<Record<string, unknown>>;
  waitFor: DemoWorld['waitFor'];
  price: () => Promise<PriceView>;
}

/** Checks the hot path answers, then connects to the chain, the databases and Redis. */
async function connectWorld(config: Config, stack: StackSummary, user: StackUser): Promise<WorldParts> {
  const health = await request(`${stack.hotPath.baseUrl}/healthz`, {}, 'hot path health check');
  if (!health.ok)
    throw new DemoError(`the hot path at ${stack.hotPath.baseUrl} answered ${health.status} to /healthz`);
  const contracts = readContractsFile(stack.chain.contractsFile);
  const chain = connectChain(stack.chain.rpcUrl, contracts);
  const wethAsset = contracts.assets.find((a) => a.assetId === 'WETH');
  if (wethAsset === undefined) throw new DemoError(`no WETH in ${stack.chain.contractsFile}`);
  const sql = postgres(config.DATABASE_URL, { max: 2, connect_timeout: 5, onnotice: () => {} });
  const sb = postgres(config.SUPABASE_DB_URL, { max: 1, connect_timeout: 5, onnotice: () => {} });
  // On dev's own cluster (--redis-cluster), its seeds are in stack.json rather than the environment.
  const redisTarget = {
    REDIS_URL: config.REDIS_URL,
    REDIS_CLUSTER_NODES: stack.redis?.clusterNodes ?? config.REDIS_CLUSTER_NODES,
  };
  const redis = createServiceRedis(redisTarget, { commandTimeoutMs: 2_000 });
  const prefix = config.REDIS_KEY_PREFIX;
  const keys = userKeys(prefix, user.userId);
  const wallet = user.wallet as Address;

  const post = async (url: string, body: unknown, what: string) => {
    const raw = JSON.stringify(body);
    const response = await request(
      url,
      {
        method: 'POST',
        body: raw,
        headers: {
          'content-type': 'application/json',
          'stripe-signature': signPayload(raw, stack.stripe.webhookSecret),
        },
      },
      what,
    );
    const text = await response.text();
    if (response.status !== 200)
      throw new DemoError(`${what}: ${url} answered ${response.status} ${text.slice(0, 200)}`);
    return JSON.parse(text) as Record<string, unknown>;
  };

  const waitFor = async <T>(
    what: string,
    timeoutMs: number,
    check: () => Promise<T | null | undefined>,
  ): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await check();
      if (value !== null && value !== undefined) return value;
      if (Date.now() > deadline)
        throw new DemoError(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
      await sleep(100);
    }
  };

  const price = async (): Promise<PriceView> => {
    const [priceJson, asset] = await Promise.all([
      redis.hget(pricesKey(prefix), wethAsset.assetId),
      sql<{ price_decimals: number; price_age_max_s: number }[]>`
        select price_decimals, price_age_max_s from assets where id = ${wethAsset.assetId}`,
    ]);
    if (priceJson === null || asset[0] === undefined)
      throw new DemoError('the hot path has no WETH price yet (has the indexer started?)');
    const { quote } = parsePrice(priceJson);
    return {
      answer: quote.answer,
      updatedAtS: quote.updatedAtS,
      decimals: asset[0].price_decimals,
      priceAgeMaxS: asset[0].price_age_max_s,
    };
  };

  return {
    config,
    stack,
    user,
    contracts,
    chain,
    wethAsset,
    sql,
    sb,
    redis,
    redisTarget,
    prefix,
    keys,
    wallet,
    post,
    waitFor,
    price,
  };
}

/** The hot path's side: the user's credit and collateral in its cache, swipes, events and prices. */
function hotPathActions(
  parts: WorldParts,
): Pick<DemoWorld, 'credit' | 'cachedCollateral' | 'swipe' | 'sendEvent' | 'price' | 'pushPrice'> {
  const { config, stack, user, contracts, chain, wethAsset, sql, redis, redisTarget, prefix, keys, post } =
    parts;
  const { waitFor, price } = parts;
  return {
    async credit() {
      if (!(await ensureAccount(redis, sql, prefix, user.userId)))
        throw new DemoError(`user ${user.userId} is not in the financial database`);
      return cachedCredit(redis, sql, prefix, contracts.chainId, user.userId, Math.floor(Date.now() / 1000));
    },
    async cachedCollateral() {
      await ensureAccount(redis, sql, prefix, user.userId);
      return BigInt(
        (await redis.hget(keys.account, `${ACCOUNT.collateralPrefix}${wethAsset.assetId}`)) ?? '0',
      );
    },
    async swipe(input) {
      if (input.amountCents <= 0n || input.amountCents > BigInt(Number.MAX_SAFE_INTEGER))
        throw new DemoError(`swipe amount ${input.amountCents} is out of range`);
      const createdS = Math.floor(Date.now() / 1000);
      const event = authorizationRequest({
        cardId: user.cardId,
        // Stripe's wire format: integer cents in a JSON number (exact below 2^53, checked above).
        amountCents: Number(input.amountCents),
        mcc: input.mcc,
        createdS,
        apiVersion: stack.stripe.apiVersion,
        authorizationId: `iauth_demo_${randomStripeId()}`,
      });
      const answer = await post(stack.hotPath.authorizationUrl, event, 'authorization request');
      const metadata = answer['metadata'] as { reason?: string } | undefined;
      return {
        approved: answer['approved'] === true,
        reason: metadata?.reason ?? '(no reason)',
        authorizationId: event.data.object.id,
        createdS,
      };
    },
    async sendEvent(event) {
      const answer = await post(stack.hotPath.eventsUrl, event, `${event.type} event`);
      if (answer['processed'] !== true)
        throw new DemoError(`the hot path did not process ${event.type} ${event.id}`);
    },
    price,
    async pushPrice(answer) {
      const current = await price();
      // The hot path learns prices by pub/sub; listen on the same channel to know when it has this one.
      const subscriber = createServiceRedis(redisTarget, {
        commandTimeoutMs: 2_000,
        shardedSubscriber: true,
      });
      const startedAt = Date.now();
      try {
        let seen = false;
        await subscribeToAll(subscriber, [channels(prefix).prices], {
          onMessage: (_channel, message) => {
            const update = parsePrice(message);
            if (update.assetId === wethAsset.assetId && update.quote.answer === answer) seen = true;
          },
          // A message missed meanwhile is caught by the stored price below.
          onResubscribed: () => {},
        });
        let block = await chain.setPrice(wethAsset.assetId, answer);
        if (answer > current.answer) {
          // A rise beyond the feed's deviation bound is held back until a following round confirms it
          // (docs/chain.md, "Oracle sanity"): the feed reports it again, as a real one keeps reporting.
          const [risk] = await sql<{ bps: number }[]>`
            select price_deviation_max_bps as bps from assets where id = ${wethAsset.assetId}`;
          const deviationMaxBps = BigInt(risk?.bps ?? 10_000);
          if ((answer - current.answer) * 10_000n > current.answer * deviationMaxBps)
            block = await chain.setPrice(wethAsset.assetId, answer);
          // A rise adds credit, so the indexer applies it after the confirmations (a drop at first sight).
          await chain.mine(config.CHAIN_CONFIRMATIONS);
        }
        await waitFor('the indexer to publish the new WETH price', DEMO_LIMITS.indexerWaitMs, async () => {
          if (seen) return true;
          // The message may have come before we listened: the stored price tells too.
          const now = await price();
          const fresh = answer !== current.answer || now.updatedAtS > current.updatedAtS;
          return now.answer === answer && fresh ? true : null;
        });
        await sleep(DEMO_LIMITS.priceGraceMs);
        return { block, waitedMs: Date.now() - startedAt };
      } finally {
        subscriber.disconnect();
      }
    },
  };
}

/** The ledger's and the chain's side: settlements, the vault's numbers, withdrawals and liquidations. */
function ledgerActions(
  parts: WorldParts,
): Pick<
  DemoWorld,
  | 'settlement'
  | 'debtOnChainUsdc'
  | 'collateralOnChain'
  | 'approveWithdrawal'
  | 'cachedPendingWithdrawal'
  | 'latestLiquidation'
> {
  const { config, user, contracts, chain, wethAsset, sql, redis, prefix, keys, wallet, waitFor } = parts;
  return {
    async settlement(ref) {
      const [row] = await sql<{ status: string; transaction_hash: string | null }[]>`
        select status, transaction_hash from settlements where ref = ${ref}`;
      return row === undefined ? null : { status: row.status, transactionHash: row.transaction_hash };
    },
    debtOnChainUsdc: () =>
      chain.publicClient.readContract({
        address: contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'debtOf',
        args: [wallet],
      }),
    collateralOnChain: () =>
      chain.publicClient.readContract({
        address: contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'collateralOf',
        args: [wallet, wethAsset.token],
      }),
    async approveWithdrawal() {
      const deps = {
        sql,
        redis,
        prefix,
        client: chain.publicClient,
        contracts,
        signer: privateKeyToAccount(
          (config.WITHDRAWAL_SIGNER_PRIVATE_KEY ??
            localAccount(LOCAL_WITHDRAWAL_SIGNER).privateKey) as `0x${string}`,
        ),
        logger: silentLogger,
      };
      return waitFor(
        'the indexer to apply the withdrawal request',
        DEMO_LIMITS.withdrawalIndexWaitMs,
        async () => {
          const decision = await approveWithdrawal(deps, { userId: user.userId, assetId: wethAsset.assetId });
          return !decision.approved && decision.reason === 'request_not_indexed' ? null : decision;
        },
      );
    },
    async cachedPendingWithdrawal() {
      await ensureAccount(redis, sql, prefix, user.userId);
      return BigInt(
        (await redis.hget(keys.account, `${ACCOUNT.pendingWithdrawalPrefix}${wethAsset.assetId}`)) ?? '0',
      );
    },
    async latestLiquidation() {
      const [row] = await sql<
        {
          id: string;
          status: string;
          transaction_hash: string | null;
          collateral_seized_base: string;
          debt_covered_usdc: string;
          health_factor_wad: string;
        }[]
      >`select id::text, status, transaction_hash, collateral_seized_base::text, debt_covered_usdc::text,
          health_factor_wad::text
        from liquidations where user_id = ${user.userId} order by liquidations.id desc limit 1`;
      return row === undefined
        ? null
        : {
            id: BigInt(row.id),
            status: row.status,
            transactionHash: row.transaction_hash,
            collateralSeizedBase: BigInt(row.collateral_seized_base),
            debtCoveredUsdc: BigInt(row.debt_covered_usdc),
            healthFactorWad: BigInt(row.health_factor_wad),
          };
    },
  };
}

/** The user's side, through Supabase as the signed-in user: the card freeze and the dashboard. */
function userActions(parts: WorldParts): Pick<DemoWorld, 'setFrozen' | 'dashboard' | 'dashboardActivity'> {
  const { user, sb, redis, keys, waitFor } = parts;
  return {
    async setFrozen(frozen) {
      // As PostgREST runs a signed-in user's PATCH: their role and JWT claims, RLS applied.
      const updated = await asCaller(
        sb,
        userCaller(user.userId),
        (tx) => tx`update public.card_controls set frozen = ${frozen} where user_id = ${user.userId}`,
        { commit: true },
      );
      if (updated.count !== 1)
        throw new DemoError(
          `no card_controls row for user ${user.userId} in the Supabase-local database (restart npm run dev: it signs the demo users up)`,
        );
      const startedAt = Date.now();
      await waitFor(
        `the bridge to bring frozen=${frozen} to the hot path's cache`,
        DEMO_LIMITS.bridgeWaitMs,
        async () => {
          const card = await redis.hget(keys.cards, user.cardId);
          return card?.endsWith(frozen ? '|1' : '|0') === true ? true : null;
        },
      );
      return { waitedMs: Date.now() - startedAt };
    },
    async dashboard() {
      const rows = await asCaller(
        sb,
        userCaller(user.userId),
        (tx) => tx<{ available_cents: string; health_factor: string | null; health_notice: string | null }[]>`
          select available_cents::text, health_factor::text, health_notice
          from public.account_summaries where user_id = ${user.userId}`,
      );
      const row = rows[0];
      return row === undefined
        ? null
        : {
            availableCents: BigInt(row.available_cents),
            healthFactor: row.health_factor,
            healthNotice: row.health_notice,
          };
    },
    async dashboardActivity(kind) {
      const rows = await asCaller(
        sb,
        userCaller(user.userId),
        (tx) => tx<{ id: string; amount_cents: string | null; amount_base: string | null }[]>`
          select id, amount_cents::text, amount_base from public.account_activity
          where user_id = ${user.userId} and kind = ${kind} order by occurred_at desc, id`,
      );
      return rows.map((r) => ({ id: r.id, amountCents: r.amount_cents, amountBase: r.amount_base }));
    },
  };
}

export async function openDemoWorld(
  config: Config,
  stack: StackSummary,
  user: StackUser,
): Promise<DemoWorld> {
  const parts = await connectWorld(config, stack, user);
  const { contracts, chain, wethAsset, sql, sb, redis, waitFor } = parts;
  return {
    stack,
    user,
    contracts,
    chain,
    weth: wethAsset,
    ...hotPathActions(parts),
    ...userActions(parts),
    ...ledgerActions(parts),
    waitFor,
    async close() {
      redis.disconnect();
      await Promise.all([sql.end({ timeout: 2 }), sb.end({ timeout: 2 })]);
    },
  };
}

export interface DemoUserProfile {
  userId: string;
  email: string;
  name: string;
  cardId: string;
  /** A Hardhat account index (its key is unlocked on the local chain). */
  account: number;
}

/**
 * Signs a demo user up through Supabase Auth as `npm run dev` does for its own (the bridge creates
 * the financial user with the same id), then gives them a card and a linked wallet. Idempotent:
 * fixed ids. Resolves with the user as the story sees it.
 */
export async function ensureDemoUser(
  config: Config,
  contracts: ContractsFile,
  profile: DemoUserProfile,
): Promise<StackUser> {
  const sql = postgres(config.DATABASE_URL, { max: 1, connect_timeout: 5, onnotice: () => {} });
  const sb = postgres(config.SUPABASE_DB_URL, { max: 1, connect_timeout: 5, onnotice: () => {} });
  const wallet = localAccount(profile.account).address.toLowerCase();
  try {
    const [known] = await sb`select 1 from auth.users where id = ${profile.userId}`;
    if (known === undefined)
      await signUp(sb, {
        id: profile.userId,
        email: profile.email,
        userMetadata: { display_name: profile.name },
      });
    const deadline = Date.now() + DEMO_LIMITS.signUpWaitMs;
    while ((await sql`select 1 from users where id = ${profile.userId}`).length === 0) {
      if (Date.now() > deadline)
        throw new DemoError(
          `the Supabase bridge did not create ${profile.name}'s financial user within ${DEMO_LIMITS.signUpWaitMs / 1000} s`,
        );
      await sleep(100);
    }
    await sql`insert into credit_accounts (user_id) values (${profile.userId}) on conflict do nothing`;
    await sql`insert into cards (id, user_id) values (${profile.cardId}, ${profile.userId}) on conflict (id) do nothing`;
    await sql`insert into wallets (chain_id, address, user_id) values (${contracts.chainId}, ${wallet}, ${profile.userId})
      on conflict do nothing`;
    return { userId: profile.userId, cardId: profile.cardId, wallet, availableCents: 0 };
  } finally {
    await Promise.all([sql.end({ timeout: 2 }), sb.end({ timeout: 2 })]);
  }
}
