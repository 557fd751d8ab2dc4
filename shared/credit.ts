/**
 * The credit model of ARCHITECTURE.md §2, in exact integers. Pure functions: the hot path, the
 * Postgres fallback, the reconciliation jobs and the Supabase projection all call these, so there is
 * one definition of "available credit".
 */
import {
  BPS,
  type CentsFraction,
  healthFactorWadFloor,
  sumCentsFloor,
  usdcToCentsCeil,
  weightedValueCents,
} from './money.ts';

export interface AssetRisk {
  /** Our asset id (the token's symbol, e.g. "WETH"). */
  assetId: string;
  tokenDecimals: number;
  priceDecimals: number;
  ltvBps: bigint;
  liquidationThresholdBps: bigint;
  /** A price older than this counts the asset as worth zero. */
  priceAgeMaxS: number;
  /**
   * Oracle sanity (docs/chain.md "Oracle sanity"): an answer outside [min, max] (the feed's own
   * minAnswer/maxAnswer), or stamped more than `priceFutureSkewS` in the future, counts the asset as
   * worth zero. Absent bounds mean only `answer > 0`; an absent skew means 60 s.
   */
  priceAnswerMin?: bigint;
  priceAnswerMax?: bigint;
  priceFutureSkewS?: number;
}

/** The future skew allowed when an asset does not say (the value before per-asset skews existed). */
export const PRICE_FUTURE_SKEW_S_DEFAULT = 60;

export interface PriceQuote {
  answer: bigint;
  updatedAtS: number;
}

export interface CollateralHolding {
  assetId: string;
  amountBase: bigint;
  pendingWithdrawalBase: bigint;
}

export interface CreditInput {
  holdings: readonly CollateralHolding[];
  assets: ReadonlyMap<string, AssetRisk>;
  prices: ReadonlyMap<string, PriceQuote>;
  nowS: number;
  debtOnchainUsdc: bigint;
  unsettledCents: bigint;
  holdsCents: bigint;
  creditLimitCents: bigint;
}

export interface CreditSnapshot {
  collateralValueCents: bigint;
  borrowPowerCents: bigint;
  /** Σ value × liquidation threshold, the health factor's numerator. */
  thresholdValueCents: bigint;
  debtOnchainCents: bigint;
  /** min(creditLimit, borrowPower) − debt − unsettled − holds; negative when over-drawn. */
  availableCents: bigint;
  healthFactorWad: bigint | null;
  /** Assets the user holds whose price is missing or too old; they counted as zero. */
  staleAssetIds: string[];
}

/**
 * True when a quote exists, is positive and within the asset's answer bounds, is no older than the
 * asset's limit, and is not stamped further in the future than the asset's skew allows.
 */
export function isPriceFresh(quote: PriceQuote | undefined, asset: AssetRisk, nowS: number): boolean {
  if (quote === undefined || quote.answer <= 0n) return false;
  if (asset.priceAnswerMin !== undefined && quote.answer < asset.priceAnswerMin) return false;
  if (asset.priceAnswerMax !== undefined && quote.answer > asset.priceAnswerMax) return false;
  const ageS = nowS - quote.updatedAtS;
  return ageS <= asset.priceAgeMaxS && ageS >= -(asset.priceFutureSkewS ?? PRICE_FUTURE_SKEW_S_DEFAULT);
}

/**
 * Borrowing power of the collateral alone (before the program's limit and before debt). Each of the
 * three sums is exact and floored once: floor(Σ …), as §2 defines it, so the number does not depend
 * on how the collateral is split across assets beyond that one rounding.
 */
export function borrowPower(
  input: Pick<CreditInput, 'holdings' | 'assets' | 'prices' | 'nowS'>,
): Pick<
  CreditSnapshot,
  'borrowPowerCents' | 'collateralValueCents' | 'thresholdValueCents' | 'staleAssetIds'
> {
  const value: CentsFraction[] = [];
  const power: CentsFraction[] = [];
  const threshold: CentsFraction[] = [];
  const staleAssetIds: string[] = [];
  for (const holding of input.holdings) {
    // A pending withdrawal is already gone as far as credit is concerned (credit shrinks fast).
    const net = holding.amountBase - holding.pendingWithdrawalBase;
    if (net <= 0n) continue;
    const asset = input.assets.get(holding.assetId);
    const quote = input.prices.get(holding.assetId);
    // An unknown asset or a stale feed is worth zero: never its last price.
    if (asset === undefined || quote === undefined || !isPriceFresh(quote, asset, input.nowS)) {
      staleAssetIds.push(holding.assetId);
      continue;
    }
    const { tokenDecimals, priceDecimals } = asset;
    value.push(weightedValueCents(net, tokenDecimals, quote.answer, priceDecimals, BPS));
    power.push(weightedValueCents(net, tokenDecimals, quote.answer, priceDecimals, asset.ltvBps));
    threshold.push(
      weightedValueCents(net, tokenDecimals, quote.answer, priceDecimals, asset.liquidationThresholdBps),
    );
  }
  return {
    borrowPowerCents: sumCentsFloor(power),
    collateralValueCents: sumCentsFloor(value),
    thresholdValueCents: sumCentsFloor(threshold),
    staleAssetIds,
  };
}

/** The whole snapshot of a user's credit. */
export function computeCredit(input: CreditInput): CreditSnapshot {
  const power = borrowPower(input);
  const debtOnchainCents = usdcToCentsCeil(input.debtOnchainUsdc);
  const cap =
    input.creditLimitCents < power.borrowPowerCents ? input.creditLimitCents : power.borrowPowerCents;
  const availableCents = cap - debtOnchainCents - input.unsettledCents - input.holdsCents;
  const totalDebtCents = debtOnchainCents + input.unsettledCents + input.holdsCents;
  return {
    ...power,
    debtOnchainCents,
    availableCents,
    healthFactorWad: healthFactorWadFloor(power.thresholdValueCents, totalDebtCents),
  };
}

export { BPS };
