// Proves the liquidation plan's rules as pure arithmetic: healthy accounts (by the vault's own rule, in
// USDC units) and stale prices are never liquidated; the whole debt below a health factor of 0.95 or under
// $2,000, half of it otherwise; collateral seized at the price plus the 5% bonus, cut to what the account
// holds and never above the vault's SeizeTooLarge bound for the covered debt.
import { describe, expect, it } from 'vitest';
import { planLiquidation } from './index.ts';

const ETH = 10n ** 18n;
const USDC = 10n ** 6n;
const NOW = 1_800_000_000;
const BONUS = 500n;
const weth = {
  assetId: 'WETH',
  token: '0x00000000000000000000000000000000000000e1' as const,
  tokenDecimals: 18,
  priceDecimals: 8,
  liquidationThresholdBps: 8_250n,
  priceAgeMaxS: 3_900,
};
const at = (dollars: bigint, updatedAtS = NOW) =>
  new Map([['WETH', { answer: dollars * 10n ** 8n, updatedAtS }]]);
const state = (debtUsdc: bigint, eth: bigint) => ({ debtUsdc, collateral: new Map([['WETH', eth]]) });

describe('planLiquidation', () => {
  it('leaves healthy accounts and accounts priced by a stale feed alone', () => {
    expect(planLiquidation(state(2_000n * USDC, ETH), [weth], at(3_000n), NOW, BONUS)).toBeNull();
    expect(planLiquidation(state(2_000n * USDC, ETH), [weth], at(1_000n, NOW - 4_000), NOW, BONUS)).toBe(
      'stale',
    );
    expect(planLiquidation(state(0n, ETH), [weth], at(1n), NOW, BONUS)).toBeNull();
  });

  it('covers half of a large debt while the health factor is at least 0.95, all of it below', () => {
    // $4,000 of debt against 2 ETH at $2,400: 3,960 / 4,000 = 0.99.
    const half = planLiquidation(state(4_000n * USDC, 2n * ETH), [weth], at(2_400n), NOW, BONUS);
    expect(half).toMatchObject({
      debtCoveredUsdc: 2_000n * USDC,
      collateralSeizedBase: 875_000_000_000_000_000n,
    });
    // $2,000 against 1 ETH at $2,200: 0.9075.
    const all = planLiquidation(state(2_000n * USDC, ETH), [weth], at(2_200n), NOW, BONUS);
    expect(all).toMatchObject({
      debtCoveredUsdc: 2_000n * USDC,
      collateralSeizedBase: 954_545_454_545_454_545n,
    });
  });

  it('seizes no more than the account holds, and covers only what that pays for', () => {
    // $2,000 against 0.5 ETH at $2,000: all of it, covering $1,000 / 1.05.
    const plan = planLiquidation(state(2_000n * USDC, ETH / 2n), [weth], at(2_000n), NOW, BONUS);
    // $952.380952 × 1.05 at $2,000, floored: what the vault lets that cover seize (0.2 gwei stays).
    expect(plan).toMatchObject({
      collateralSeizedBase: 499_999_999_800_000_000n,
      debtCoveredUsdc: 952_380_952n,
    });
  });

  it('judges as the vault does: in USDC units, floored per asset, not in cents', () => {
    // 1 ETH at $2,424.24 × 82.5 % = $2,000.000... (2_000_000_000 USDC units, floored): not below a debt of
    // exactly that, below a debt one unit higher (the credit model's cents would call both 1.0).
    const price = new Map([['WETH', { answer: 242_424_242_425n, updatedAtS: NOW }]]);
    expect(planLiquidation(state(2_000_000_000n, ETH), [weth], price, NOW, BONUS)).toBeNull();
    expect(planLiquidation(state(2_000_000_001n, ETH), [weth], price, NOW, BONUS)).not.toBeNull();
  });
});
