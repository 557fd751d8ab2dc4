/** Seeds users, cards, assets and prices in the financial database (and the market in Redis). */
import type { AssetRisk } from '../../shared/credit.ts';
import type { Sql } from '../../shared/db/client.ts';
import { publishPrice } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { publishAsset } from '../../shared/redis/market.ts';
import { newCardId, newUserId } from './stripe.ts';

/** WETH-like: 18 decimals, 8-decimal USD feed, LTV 80 %, LT 82.5 %. */
export const WETH: AssetRisk = {
  assetId: 'WETH',
  tokenDecimals: 18,
  priceDecimals: 8,
  ltvBps: 8000n,
  liquidationThresholdBps: 8250n,
  priceAgeMaxS: 3_600,
};

export async function seedAsset(
  sql: Sql,
  redis: Redis,
  prefix: string,
  asset: AssetRisk,
  priceAnswer: bigint,
  updatedAtS: number,
) {
  await sql`insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
      liquidation_threshold_bps, price_age_max_s)
    values (${asset.assetId}, 31337, ${`0x${asset.assetId.toLowerCase().padEnd(40, '0').slice(0, 40)}`}, ${asset.tokenDecimals},
      ${'0x'.padEnd(42, '1')}, ${asset.priceDecimals}, ${Number(asset.ltvBps)}, ${Number(asset.liquidationThresholdBps)},
      ${asset.priceAgeMaxS})
    on conflict (id) do nothing`;
  await publishAsset(redis, prefix, asset);
  await setPrice(sql, redis, prefix, asset.assetId, priceAnswer, updatedAtS);
}

let round = 1n;
export async function setPrice(
  sql: Sql,
  redis: Redis,
  prefix: string,
  assetId: string,
  answer: bigint,
  updatedAtS: number,
) {
  round++;
  await sql`insert into prices (asset_id, round_id, answer, updated_at) values (${assetId}, ${round.toString()}, ${answer.toString()},
    ${new Date(updatedAtS * 1000)})`;
  await publishPrice(redis, prefix, { assetId, answer, updatedAtS, roundId: round });
}

export interface SeedUserOptions {
  collateral?: { assetId: string; amountBase: bigint; pendingWithdrawalBase?: bigint }[];
  creditLimitCents?: bigint;
  dailyLimitCents?: bigint;
  blockedMccs?: string[];
  cards?: { status?: 'active' | 'inactive' | 'canceled'; frozen?: boolean }[];
  unsettledCents?: bigint;
  debtOnchainUsdc?: bigint;
  /** The user's id (default: a new random one), e.g. to place two users on one outbox shard. */
  userId?: string;
}

export async function seedUser(sql: Sql, options: SeedUserOptions = {}) {
  const userId = options.userId ?? newUserId();
  await sql`insert into users (id, credit_limit_cents, daily_limit_cents, blocked_mccs)
    values (${userId}, ${(options.creditLimitCents ?? 10_000_000n).toString()}, ${(options.dailyLimitCents ?? 10_000_000n).toString()},
      ${options.blockedMccs ?? []})`;
  await sql`insert into credit_accounts (user_id, unsettled_cents, debt_onchain_usdc)
    values (${userId}, ${(options.unsettledCents ?? 0n).toString()}, ${(options.debtOnchainUsdc ?? 0n).toString()})`;
  for (const c of options.collateral ?? []) {
    await sql`insert into positions (user_id, asset_id, collateral_base, pending_withdrawal_base)
      values (${userId}, ${c.assetId}, ${c.amountBase.toString()}, ${(c.pendingWithdrawalBase ?? 0n).toString()})`;
  }
  const cardIds: string[] = [];
  for (const card of options.cards ?? [{}]) {
    const cardId = newCardId();
    await sql`insert into cards (id, user_id, status, frozen) values (${cardId}, ${userId}, ${card.status ?? 'active'}, ${card.frozen ?? false})`;
    cardIds.push(cardId);
  }
  return { userId, cardId: cardIds[0]!, cardIds };
}

/** Amount of WETH base units worth `cents` of borrow power at `priceE8` with LTV 80 % (exact when divisible). */
export function wethForBorrowPower(cents: bigint, priceE8: bigint): bigint {
  // borrow = amount × price × 100 × 8000 / (1e18 × 1e8 × 1e4) → amount = cents × 1e30 / (price × 800_000)
  const numerator = cents * 10n ** 30n;
  const denominator = priceE8 * 800_000n;
  return (numerator + denominator - 1n) / denominator;
}
