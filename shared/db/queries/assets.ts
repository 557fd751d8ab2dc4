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
}

export function assetRiskOf(row: AssetRiskRow): AssetRisk {
  return {
    assetId: row.id,
    tokenDecimals: row.token_decimals,
    priceDecimals: row.price_decimals,
    ltvBps: BigInt(row.ltv_bps),
    liquidationThresholdBps: BigInt(row.liquidation_threshold_bps),
    priceAgeMaxS: row.price_age_max_s,
  };
}

/** Assets by id, for `borrowPower`/`computeCredit`. */
export function assetRiskMap(rows: readonly AssetRiskRow[]): Map<string, AssetRisk> {
  return new Map(rows.map((row) => [row.id, assetRiskOf(row)]));
}
