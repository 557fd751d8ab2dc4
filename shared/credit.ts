/**
 * The credit model of ARCHITECTURE.md §2, in exact integers. Pure functions: the hot path, the
 * Postgres fallback, the reconciliation jobs and the Supabase projection all call these, so there is
 * one definition of "available credit".
 */
import { BPS, healthFactorWadFloor, sumCentsFloor, usdcToCentsCeil, weightedValueCents } from './money.ts';

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

/** A holding the credit counts: its amount net of pending withdrawals, with a fresh price. */
interface PricedHolding {
  netBase: bigint;
  asset: AssetRisk;
  quote: PriceQuote;
}

/**
 * The holdings credit counts and the assets it counts as zero: a pending withdrawal is already gone as
 * far as credit is concerned (credit shrinks fast), and an unknown asset or a stale feed is worth zero,
 * never its last price.
 */
function pricedHoldings(input: Pick<CreditInput, 'holdings' | 'assets' | 'prices' | 'nowS'>): {
  priced: PricedHolding[];
  staleAssetIds: string[];
} {
  const priced: PricedHolding[] = [];
  const staleAssetIds: string[] = [];
  for (const holding of input.holdings) {
    const netBase = holding.amountBase - holding.pendingWithdrawalBase;
    if (netBase <= 0n) continue;
    const asset = input.assets.get(holding.assetId);
    const quote = input.prices.get(holding.assetId);
    if (asset === undefined || quote === undefined || !isPriceFresh(quote, asset, input.nowS)) {
      staleAssetIds.push(holding.assetId);
      continue;
    }
    priced.push({ netBase, asset, quote });
  }
  return { priced, staleAssetIds };
}

/** Σ of the priced holdings' values weighted by `weightOf` (an LTV, a threshold, or the whole), floored once. */
function weightedSumCentsFloor(
  priced: readonly PricedHolding[],
  weightOf: (asset: AssetRisk) => bigint,
): bigint {
  return sumCentsFloor(
    priced.map(({ netBase, asset, quote }) =>
      weightedValueCents(netBase, asset.tokenDecimals, quote.answer, asset.priceDecimals, weightOf(asset)),
    ),
  );
}

const WHOLE = () => BPS;
const LTV = (asset: AssetRisk) => asset.ltvBps;
const LIQUIDATION_THRESHOLD = (asset: AssetRisk) => asset.liquidationThresholdBps;

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
  const { priced, staleAssetIds } = pricedHoldings(input);
  return {
    borrowPowerCents: weightedSumCentsFloor(priced, LTV),
    collateralValueCents: weightedSumCentsFloor(priced, WHOLE),
    thresholdValueCents: weightedSumCentsFloor(priced, LIQUIDATION_THRESHOLD),
    staleAssetIds,
  };
}

/**
 * `borrowPower`'s borrow power and stale assets alone, for the decisions (the Redis decision and its
 * Postgres fallback), which need nothing else: a third of the exact arithmetic, once per swipe.
 */
export function borrowPowerCents(
  input: Pick<CreditInput, 'holdings' | 'assets' | 'prices' | 'nowS'>,
): Pick<CreditSnapshot, 'borrowPowerCents' | 'staleAssetIds'> {
  const { priced, staleAssetIds } = pricedHoldings(input);
  return { borrowPowerCents: weightedSumCentsFloor(priced, LTV), staleAssetIds };
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
