/**
 * Chain-side reads every chain service shares: vault accounts, wallets, assets, positions and debt, prices
 * in force. Plain functions taking `sql` or a transaction first.
 */
import type postgres from 'postgres';
import type { Address } from 'viem';
import { type AssetRiskRow, assetRiskOf } from './assets.ts';

type Sql = postgres.Sql | postgres.TransactionSql;

/**
 * Each user's vault account on the chain: the first wallet linked (by link time, then address), where
 * the settlement worker records debt and refunds. Wallets are never unlinked, so it never changes.
 */
export async function vaultAccountsOf(
  sql: Sql,
  chainId: number,
  userIds: readonly string[],
): Promise<Map<string, Address>> {
  if (userIds.length === 0) return new Map();
  const rows = await sql<{ user_id: string; address: string }[]>`
    select distinct on (user_id) user_id::text, address from wallets
    where chain_id = ${chainId} and user_id = any(${[...userIds]}::uuid[])
    order by user_id, linked_at, address`;
  return new Map(rows.map((r) => [r.user_id, r.address.toLowerCase() as Address]));
}

export async function walletUsers(
  sql: Sql,
  chainId: number,
  addresses: readonly string[],
): Promise<Map<string, string>> {
  if (addresses.length === 0) return new Map();
  const rows = await sql<{ address: string; user_id: string }[]>`
    select address, user_id::text from wallets where chain_id = ${chainId} and address = any(${addresses as string[]}::text[])`;
  return new Map(rows.map((r) => [r.address, r.user_id]));
}

export interface AssetRow {
  assetId: string;
  token: Address;
  tokenDecimals: number;
  feed: Address;
  priceDecimals: number;
  ltvBps: bigint;
  liquidationThresholdBps: bigint;
  priceAgeMaxS: number;
  /** Oracle sanity (docs/chain.md "Oracle sanity"). */
  priceAnswerMin: bigint;
  priceAnswerMax: bigint;
  priceDeviationMaxBps: bigint;
  priceFutureSkewS: number;
}

export async function loadAssets(sql: Sql, chainId: number): Promise<AssetRow[]> {
  const rows = await sql<
    (AssetRiskRow & {
      token_address: string;
      price_feed_address: string;
      price_answer_min: string;
      price_answer_max: string;
      price_deviation_max_bps: number;
      price_future_skew_s: number;
    })[]
  >`select id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps, liquidation_threshold_bps,
      price_age_max_s, price_answer_min::text, price_answer_max::text, price_deviation_max_bps, price_future_skew_s
    from assets where chain_id = ${chainId} and enabled order by id`;
  return rows.map((r) => ({
    ...assetRiskOf(r),
    token: r.token_address.toLowerCase() as Address,
    feed: r.price_feed_address.toLowerCase() as Address,
    priceAnswerMin: BigInt(r.price_answer_min),
    priceAnswerMax: BigInt(r.price_answer_max),
    priceDeviationMaxBps: BigInt(r.price_deviation_max_bps),
    priceFutureSkewS: r.price_future_skew_s,
  }));
}

export interface ChainStateRow {
  userId: string;
  debtOnchainUsdc: bigint;
  collateral: Map<string, { amountBase: bigint; pendingWithdrawalBase: bigint }>;
}

/** What the Redis write-through needs per user: every position and the on-chain debt. */
export async function chainStateOfUsers(sql: Sql, userIds: readonly string[]): Promise<ChainStateRow[]> {
  if (userIds.length === 0) return [];
  const ids = [...userIds];
  const [positions, accounts] = await Promise.all([
    sql<{ user_id: string; asset_id: string; c: string; w: string }[]>`
      select user_id::text, asset_id, collateral_base::text as c, pending_withdrawal_base::text as w
      from positions where user_id = any(${ids}::uuid[])`,
    sql<{ user_id: string; debt: string }[]>`
      select user_id::text, debt_onchain_usdc::text as debt from credit_accounts where user_id = any(${ids}::uuid[])`,
  ]);
  const byUser = new Map<string, ChainStateRow>(
    ids.map((id) => [id, { userId: id, debtOnchainUsdc: 0n, collateral: new Map() }]),
  );
  for (const p of positions) {
    byUser
      .get(p.user_id)
      ?.collateral.set(p.asset_id, { amountBase: BigInt(p.c), pendingWithdrawalBase: BigInt(p.w) });
  }
  for (const a of accounts) {
    const row = byUser.get(a.user_id);
    if (row !== undefined) row.debtOnchainUsdc = BigInt(a.debt);
  }
  return [...byUser.values()];
}

export interface PriceRow {
  assetId: string;
  roundId: bigint;
  answer: bigint;
  updatedAtS: bigint;
  blockNumber: bigint;
}

/**
 * The price in force per asset: the newest applied round (by time, then round). One index probe per
 * asset (prices_asset_time_idx), however long the price history grows.
 */
export async function pricesInForce(sql: Sql, assetIds: readonly string[]): Promise<Map<string, PriceRow>> {
  if (assetIds.length === 0) return new Map();
  const rows = await sql<
    { asset_id: string; round_id: string; answer: string; s: string; b: string | null }[]
  >`
    select a.asset_id, p.round_id::text, p.answer::text, extract(epoch from p.updated_at)::bigint::text as s,
      p.block_number::text as b
    from unnest(${[...assetIds]}::text[]) as a(asset_id)
    cross join lateral (
      select round_id, answer, updated_at, block_number from prices
      where prices.asset_id = a.asset_id order by updated_at desc, round_id desc limit 1
    ) p`;
  return new Map(
    rows.map((r) => [
      r.asset_id,
      {
        assetId: r.asset_id,
        roundId: BigInt(r.round_id),
        answer: BigInt(r.answer),
        updatedAtS: BigInt(r.s),
        blockNumber: BigInt(r.b ?? '0'),
      },
    ]),
  );
}
