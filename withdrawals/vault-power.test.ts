// Proves the approval service never signs a payout the vault's own check refuses: the vault rounds
// borrow power per asset in USDC units, which can fall one unit short of the service's cents (a
// corner the randomized vault test found); `vaultBorrowPowerUsdc` computes it the vault's way.
import { describe, expect, it } from 'vitest';
import { type AssetRisk, borrowPower, type PriceQuote } from '../shared/credit.ts';
import { vaultBorrowPowerUsdc } from './index.ts';

const risk = new Map<string, AssetRisk>([
  [
    'WETH',
    {
      assetId: 'WETH',
      tokenDecimals: 18,
      priceDecimals: 8,
      ltvBps: 8000n,
      liquidationThresholdBps: 8250n,
      priceAgeMaxS: 3600,
    },
  ],
  [
    'WBTC',
    {
      assetId: 'WBTC',
      tokenDecimals: 8,
      priceDecimals: 8,
      ltvBps: 7300n,
      liquidationThresholdBps: 7800n,
      priceAgeMaxS: 3600,
    },
  ],
]);
const nowS = 1_800_000_000;
const prices = new Map<string, PriceQuote>([
  ['WETH', { answer: 300_000_000_000n, updatedAtS: nowS }],
  ['WBTC', { answer: 6_000_012_345_679n, updatedAtS: nowS }],
]);
const holdings = [
  { assetId: 'WETH', amountBase: 1_250_000_000_250_000_000n, pendingWithdrawalBase: 0n },
  { assetId: 'WBTC', amountBase: 10_017_194n, pendingWithdrawalBase: 0n },
];

describe('borrow power as the vault computes it', () => {
  it('is the per-asset floor in USDC units, one unit under the cents figure in this corner', () => {
    const debtUsdc = 7_387_540_000n; // $7,387.54, whole cents
    const cents = borrowPower({ holdings, assets: risk, prices, nowS }).borrowPowerCents;
    expect(cents).toBe(738_754n); // the credit model: covered to the cent
    expect(vaultBorrowPowerUsdc(holdings, risk, prices)).toBe(7_387_539_999n); // the vault: one unit short
    expect(vaultBorrowPowerUsdc(holdings, risk, prices) < debtUsdc).toBe(true);
  });

  it('leaves out what is pending withdrawal and assets without a price', () => {
    const pending = [{ assetId: 'WETH', amountBase: 2n * 10n ** 18n, pendingWithdrawalBase: 10n ** 18n }];
    expect(vaultBorrowPowerUsdc(pending, risk, prices)).toBe(2_400_000_000n);
    expect(vaultBorrowPowerUsdc(pending, risk, new Map())).toBe(0n);
  });
});
