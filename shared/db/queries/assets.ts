/** An `assets` row as the risk model needs it. */
import type { AssetRisk } from '../../credit.ts';

/** The columns of `assets` the risk model reads (select them as named here). */
export interface AssetRiskRow {
  id: string;
  token_decimals: number;
  price_decimals: number;
  ltv_bps: number;
  liquidation_threshold_bps: number;
  price_age_max_s: number;
  /** Oracle sanity columns (numeric answers arrive as decimal strings); optional for older selects. */
  price_answer_min?: string;
  price_answer_max?: string;
  price_future_skew_s?: number;
}

export function assetRiskOf(row: AssetRiskRow): AssetRisk {
  return {
    assetId: row.id,
    tokenDecimals: row.token_decimals,
    priceDecimals: row.price_decimals,
    ltvBps: BigInt(row.ltv_bps),
    liquidationThresholdBps: BigInt(row.liquidation_threshold_bps),
    priceAgeMaxS: row.price_age_max_s,
    ...(row.price_answer_min === undefined ? {} : { priceAnswerMin: BigInt(row.price_answer_min) }),
    ...(row.price_answer_max === undefined ? {} : { priceAnswerMax: BigInt(row.price_answer_max) }),
    ...(row.price_future_skew_s === undefined ? {} : { priceFutureSkewS: row.price_future_skew_s }),
  };
}

/** Assets by id, for `borrowPower`/`computeCredit`. */
export function assetRiskMap(rows: readonly AssetRiskRow[]): Map<string, AssetRisk> {
  return new Map(rows.map((row) => [row.id, assetRiskOf(row)]));
}
