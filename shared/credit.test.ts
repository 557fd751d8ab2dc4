// Proves the credit model of ARCHITECTURE.md §2: the worked vectors V1–V5 of reference/defi-card.md to the last digit, stale prices worth zero, pending withdrawals, the credit-limit cap and the availableCents formula, by example and by fast-check properties.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type AssetRisk,
  borrowPower,
  borrowPowerCents,
  type CollateralHolding,
  type CreditInput,
  computeCredit,
  isPriceFresh,
  type PriceQuote,
} from './credit.ts';
import {
  borrowPowerCentsFloor,
  divCeil,
  divFloor,
  healthFactorWadFloor,
  USDC_PER_CENT,
  WAD,
} from './money.ts';

const NOW_S = 1_800_000_000;
const TOKEN = (decimals: number) => 10n ** BigInt(decimals);
const USD8 = (dollars: bigint) => dollars * 10n ** 8n; // an 8-decimal oracle answer
const USDC = (dollars: bigint) => dollars * 10n ** 6n;
const NO_LIMIT = 10n ** 15n; // a program cap far above any vector's borrow power

const WETH: AssetRisk = {
  assetId: 'WETH',
  tokenDecimals: 18,
  priceDecimals: 8,
  ltvBps: 8_000n,
  liquidationThresholdBps: 8_250n,
  priceAgeMaxS: 3_600,
};
const WBTC: AssetRisk = {
  assetId: 'WBTC',
  tokenDecimals: 8,
  priceDecimals: 8,
  ltvBps: 7_300n,
  liquidationThresholdBps: 7_800n,
  priceAgeMaxS: 3_600,
};
const ASSETS = new Map([
  [WETH.assetId, WETH],
  [WBTC.assetId, WBTC],
]);

function hold(assetId: string, amountBase: bigint, pendingWithdrawalBase = 0n): CollateralHolding {
  return { assetId, amountBase, pendingWithdrawalBase };
}

function fresh(answer: bigint): PriceQuote {
  return { answer, updatedAtS: NOW_S - 10 };
}

function input(overrides: Partial<CreditInput>): CreditInput {
  return {
    holdings: [],
    assets: ASSETS,
    prices: new Map(),
    nowS: NOW_S,
    debtOnchainUsdc: 0n,
    unsettledCents: 0n,
    holdsCents: 0n,
    creditLimitCents: NO_LIMIT,
    ...overrides,
  };
}

// The vectors' "Coll. base" and "Debt base" columns are USD with 8 decimals; our cents are 10^6 of those.
const BASE_PER_CENT = 10n ** 6n;

describe('worked vectors (reference/defi-card.md)', () => {
  it('V1: 2 WETH @ $3,000, debt 2,000 USDC → HF 2.475, $2,800 still borrowable under the $4,800 LTV cap', () => {
    const credit = computeCredit(
      input({
        holdings: [hold('WETH', 2n * TOKEN(18))],
        prices: new Map([['WETH', fresh(USD8(3_000n))]]),
        debtOnchainUsdc: USDC(2_000n),
      }),
    );
    expect(credit.collateralValueCents * BASE_PER_CENT).toBe(600_000_000_000n);
    expect(credit.debtOnchainCents * BASE_PER_CENT).toBe(200_000_000_000n);
    expect(credit.healthFactorWad).toBe(2_475_000_000_000_000_000n);
    expect(credit.borrowPowerCents).toBe(480_000n);
    expect(credit.availableCents).toBe(280_000n);
    expect(credit.staleAssetIds).toEqual([]);
  });

  it('V2: 1.5 WETH @ $2,400 + 0.1 WBTC @ $60,000, debt 7,000 USDC → HF 1.092857142857142857', () => {
    const credit = computeCredit(
      input({
        holdings: [hold('WETH', (3n * TOKEN(18)) / 2n), hold('WBTC', TOKEN(8) / 10n)],
        prices: new Map([
          ['WETH', fresh(USD8(2_400n))],
          ['WBTC', fresh(USD8(60_000n))],
        ]),
        debtOnchainUsdc: USDC(7_000n),
      }),
    );
    expect(credit.collateralValueCents * BASE_PER_CENT).toBe(960_000_000_000n);
    expect(credit.debtOnchainCents * BASE_PER_CENT).toBe(700_000_000_000n);
    expect(credit.healthFactorWad).toBe(1_092_857_142_857_142_857n);
    // Per-asset LTV, exact: $2,880 + $4,380 = $7,260, so $260.00 of headroom. The vector's "≈ $259.52"
    // is Aave's reporting route (avgLtv floored to 7562 bps first); our rule weights each asset exactly.
    expect(credit.borrowPowerCents).toBe(726_000n);
    expect(credit.availableCents).toBe(26_000n);
    const aaveAvgLtvBps = (288_000n * 10_000n + 438_000n * 10_000n) / 960_000n; // value-weighted, floored
    expect(aaveAvgLtvBps).toBe(7_562n);
    expect(divFloor(960_000n * aaveAvgLtvBps, 10_000n) - 700_000n).toBe(25_952n);
  });

  it('V3: V1 plus a $2,900 card spend → HF 1.0102 > 1, yet the LTV line refuses it', () => {
    const before = computeCredit(
      input({
        holdings: [hold('WETH', 2n * TOKEN(18))],
        prices: new Map([['WETH', fresh(USD8(3_000n))]]),
        debtOnchainUsdc: USDC(2_000n),
      }),
    );
    // The swipe decision uses availableCents (the LTV line): $2,900 > $2,800, so it is declined
    // (or partially approved for $2,800 when the amount is controllable).
    expect(before.availableCents).toBe(280_000n);
    expect(290_000n > before.availableCents).toBe(true);
    // Had it been granted (as a hold, or captured as unsettled debt), the position would be over the LTV line
    // while the health factor still reads above 1 — the case the vector warns about.
    for (const spend of [{ holdsCents: 290_000n }, { unsettledCents: 290_000n }]) {
      const after = computeCredit(
        input({
          holdings: [hold('WETH', 2n * TOKEN(18))],
          prices: new Map([['WETH', fresh(USD8(3_000n))]]),
          debtOnchainUsdc: USDC(2_000n),
          ...spend,
        }),
      );
      expect(after.healthFactorWad).toBe(1_010_204_081_632_653_061n);
      expect((after.healthFactorWad ?? 0n) > WAD).toBe(true);
      expect(after.availableCents).toBe(-10_000n);
    }
  });

  it('V4: 10 WETH @ $3,123.45678901, debt 20,000 USDC priced $0.9998 → HF 1.28868…', () => {
    const wethPrice = 312_345_678_901n;
    const usdcPrice = 99_980_000n;
    // The vector itself, in 8-decimal USD: collateral rounds down, debt up (Aave's mulDivCeil).
    const collateralBase = divFloor(10n * TOKEN(18) * wethPrice, TOKEN(18));
    const debtBase = divCeil(USDC(20_000n) * usdcPrice, TOKEN(6));
    expect(collateralBase).toBe(3_123_456_789_010n);
    expect(debtBase).toBe(1_999_600_000_000n);
    expect(healthFactorWadFloor(collateralBase * 8_250n, debtBase * 10_000n)).toBe(
      1_288_683_662_199_064_812n,
    );
    // Our model counts cents and holds USDC debt at par. Fed the debt's USD value, it lands at most one
    // cent of threshold value below the vector, never above it (cents round the collateral down once more).
    const credit = computeCredit(
      input({
        holdings: [hold('WETH', 10n * TOKEN(18))],
        prices: new Map([['WETH', fresh(wethPrice)]]),
        debtOnchainUsdc: debtBase / 100n,
      }),
    );
    expect(credit.collateralValueCents).toBe(3_123_456n);
    expect(credit.thresholdValueCents).toBe(2_576_851n);
    const hf = credit.healthFactorWad ?? 0n;
    const vector = 1_288_683_662_199_064_812n;
    expect(hf <= vector).toBe(true);
    expect(vector - hf < divCeil(WAD, credit.debtOnchainCents)).toBe(true);
    // At par the same debt weighs more, so the position looks less healthy, never more.
    const atPar = computeCredit(
      input({
        holdings: [hold('WETH', 10n * TOKEN(18))],
        prices: new Map([['WETH', fresh(wethPrice)]]),
        debtOnchainUsdc: USDC(20_000n),
      }),
    );
    expect((atPar.healthFactorWad ?? 0n) < hf).toBe(true);
  });

  it('V5: 2 WETH @ $1,200, debt 2,000 USDC → HF 0.99 (liquidatable) and no credit left', () => {
    const credit = computeCredit(
      input({
        holdings: [hold('WETH', 2n * TOKEN(18))],
        prices: new Map([['WETH', fresh(USD8(1_200n))]]),
        debtOnchainUsdc: USDC(2_000n),
      }),
    );
    expect(credit.collateralValueCents * BASE_PER_CENT).toBe(240_000_000_000n);
    expect(credit.healthFactorWad).toBe(990_000_000_000_000_000n);
    expect((credit.healthFactorWad ?? WAD) < WAD).toBe(true);
    expect(credit.borrowPowerCents).toBe(192_000n);
    expect(credit.availableCents).toBe(-8_000n);
  });
});

describe('stale prices count as zero', () => {
  const base = {
    holdings: [hold('WETH', 2n * TOKEN(18)), hold('WBTC', TOKEN(8))],
    debtOnchainUsdc: USDC(100n),
  };

  it('values an asset with an old price at zero, never at its last (even much higher) price', () => {
    const credit = computeCredit(
      input({
        ...base,
        prices: new Map([
          ['WETH', { answer: USD8(1_000_000n), updatedAtS: NOW_S - WETH.priceAgeMaxS - 1 }],
          ['WBTC', fresh(USD8(60_000n))],
        ]),
      }),
    );
    expect(credit.staleAssetIds).toEqual(['WETH']);
    expect(credit.collateralValueCents).toBe(6_000_000n); // the WBTC alone
    expect(credit.borrowPowerCents).toBe(borrowPowerCentsFloor(TOKEN(8), 8, USD8(60_000n), 8, WBTC.ltvBps));
  });

  it('treats a price exactly at its age limit as fresh and one second older as stale', () => {
    const at = (ageS: number): PriceQuote => ({ answer: USD8(3_000n), updatedAtS: NOW_S - ageS });
    expect(isPriceFresh(at(WETH.priceAgeMaxS), WETH, NOW_S)).toBe(true);
    expect(isPriceFresh(at(WETH.priceAgeMaxS + 1), WETH, NOW_S)).toBe(false);
    // A timestamp from the future beyond 60 s of clock skew is not trusted either.
    expect(isPriceFresh(at(-60), WETH, NOW_S)).toBe(true);
    expect(isPriceFresh(at(-61), WETH, NOW_S)).toBe(false);
  });

  it('counts missing, zero or negative prices and unknown assets as zero', () => {
    const credit = computeCredit(
      input({
        holdings: [hold('WETH', TOKEN(18)), hold('WBTC', TOKEN(8)), hold('DOGE', 10n ** 30n)],
        prices: new Map([
          ['WBTC', fresh(0n)],
          ['DOGE', fresh(USD8(1n))],
        ]),
      }),
    );
    expect(credit.staleAssetIds).toEqual(['WETH', 'WBTC', 'DOGE']);
    expect(credit.borrowPowerCents).toBe(0n);
    expect(credit.collateralValueCents).toBe(0n);
    expect(isPriceFresh(fresh(-1n), WETH, NOW_S)).toBe(false);
  });

  it('leaves a debtor with only stale collateral a health factor of zero and negative credit', () => {
    const credit = computeCredit(
      input({
        holdings: [hold('WETH', 2n * TOKEN(18))],
        prices: new Map([['WETH', { answer: USD8(3_000n), updatedAtS: NOW_S - 86_400 }]]),
        debtOnchainUsdc: USDC(2_000n),
      }),
    );
    expect(credit.healthFactorWad).toBe(0n);
    expect(credit.availableCents).toBe(-200_000n);
  });
});

describe('pending withdrawals', () => {
  it('reduce borrow power as if the tokens were already gone', () => {
    const prices = new Map([['WETH', fresh(USD8(3_000n))]]);
    const withPending = computeCredit(
      input({ holdings: [hold('WETH', 2n * TOKEN(18), TOKEN(18) / 2n)], prices }),
    );
    const reduced = computeCredit(input({ holdings: [hold('WETH', (3n * TOKEN(18)) / 2n)], prices }));
    expect(withPending.borrowPowerCents).toBe(360_000n); // 1.5 WETH × $3,000 × 80 %
    expect(withPending).toEqual(reduced);
  });

  it('leave nothing (and no stale flag) when they cover the whole balance or more', () => {
    const prices = new Map([['WETH', fresh(USD8(3_000n))]]);
    for (const pending of [TOKEN(18), 2n * TOKEN(18)]) {
      const credit = computeCredit(input({ holdings: [hold('WETH', TOKEN(18), pending)], prices }));
      expect(credit.borrowPowerCents).toBe(0n);
      expect(credit.staleAssetIds).toEqual([]);
    }
  });

  it('never increase credit: more pending is never more available', () => {
    const prices = new Map([['WETH', fresh(USD8(3_000n))]]);
    const amount = fc.bigInt({ min: 0n, max: 10n ** 24n });
    fc.assert(
      fc.property(amount, amount, amount, (balance, p1, p2) => {
        const [low, high] = p1 <= p2 ? [p1, p2] : [p2, p1];
        const a = computeCredit(input({ holdings: [hold('WETH', balance, low)], prices }));
        const b = computeCredit(input({ holdings: [hold('WETH', balance, high)], prices }));
        expect(b.availableCents <= a.availableCents).toBe(true);
      }),
    );
  });
});

describe('available credit', () => {
  const prices = new Map([
    ['WETH', fresh(USD8(3_000n))],
    ['WBTC', fresh(USD8(60_000n))],
  ]);

  it('is capped by the credit limit when the collateral would allow more', () => {
    const collateral = { holdings: [hold('WETH', 2n * TOKEN(18))], prices };
    expect(computeCredit(input({ ...collateral, creditLimitCents: 100_000n })).availableCents).toBe(100_000n);
    expect(
      computeCredit(input({ ...collateral, creditLimitCents: 100_000n, debtOnchainUsdc: USDC(100n) }))
        .availableCents,
    ).toBe(90_000n);
    // A limit above the borrow power changes nothing.
    expect(computeCredit(input({ ...collateral, creditLimitCents: 480_001n })).availableCents).toBe(480_000n);
    expect(computeCredit(input({ ...collateral, creditLimitCents: 0n })).availableCents).toBe(0n);
  });

  it('rounds on-chain debt up: one USDC base unit costs a whole cent', () => {
    const collateral = { holdings: [hold('WETH', 2n * TOKEN(18))], prices };
    expect(computeCredit(input({ ...collateral, debtOnchainUsdc: 1n })).availableCents).toBe(479_999n);
    expect(computeCredit(input({ ...collateral, debtOnchainUsdc: USDC_PER_CENT + 1n })).availableCents).toBe(
      479_998n,
    );
  });

  it('floors the sum over assets once: two half-cent borrow powers make one cent', () => {
    // A 2-decimal $1 token: one base unit is worth 1 cent; at 50 % LTV it lends half a cent.
    const halfCent = (assetId: string): AssetRisk => ({
      assetId,
      tokenDecimals: 2,
      priceDecimals: 8,
      ltvBps: 5_000n,
      liquidationThresholdBps: 5_000n,
      priceAgeMaxS: 60,
    });
    const credit = computeCredit(
      input({
        holdings: [hold('A', 1n), hold('B', 1n)],
        assets: new Map([
          ['A', halfCent('A')],
          ['B', halfCent('B')],
        ]),
        prices: new Map([
          ['A', fresh(USD8(1n))],
          ['B', fresh(USD8(1n))],
        ]),
      }),
    );
    expect(credit.borrowPowerCents).toBe(1n);
    expect(credit.thresholdValueCents).toBe(1n);
    expect(credit.collateralValueCents).toBe(2n);
  });

  it('equals min(limit, borrow power) − ceil(debt) − unsettled − holds, and never exceeds the exact power', () => {
    const balance = fc.bigInt({ min: 0n, max: 10n ** 30n });
    const centsArb = fc.bigInt({ min: 0n, max: 10n ** 12n });
    fc.assert(
      fc.property(
        balance,
        balance,
        fc.bigInt({ min: 0n, max: 10n ** 18n }),
        centsArb,
        centsArb,
        centsArb,
        (weth, wbtc, debtUsdc, unsettled, holds, limit) => {
          const credit = computeCredit(
            input({
              holdings: [hold('WETH', weth), hold('WBTC', wbtc)],
              prices,
              debtOnchainUsdc: debtUsdc,
              unsettledCents: unsettled,
              holdsCents: holds,
              creditLimitCents: limit,
            }),
          );
          // The exact borrow power as one fraction over 10^26 × 10^4 (WETH's scale; WBTC's is 10^16).
          const exactNumerator =
            weth * USD8(3_000n) * 100n * WETH.ltvBps + wbtc * USD8(60_000n) * 100n * WBTC.ltvBps * 10n ** 10n;
          const denominator = 10n ** 26n * 10_000n;
          const power = credit.borrowPowerCents;
          expect(power * denominator <= exactNumerator && exactNumerator < (power + 1n) * denominator).toBe(
            true,
          );
          const cap = limit < power ? limit : power;
          const debtCents = divCeil(debtUsdc, USDC_PER_CENT);
          expect(credit.availableCents).toBe(cap - debtCents - unsettled - holds);
          // Invariant 1's arithmetic: whatever is still available, spending it keeps the total within power.
          if (credit.availableCents > 0n) {
            expect(debtCents + unsettled + holds + credit.availableCents <= power).toBe(true);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never falls when collateral is added or a price rises', () => {
    const amount = fc.bigInt({ min: 0n, max: 10n ** 24n });
    const answer = fc.bigInt({ min: 1n, max: 10n ** 14n });
    fc.assert(
      fc.property(amount, amount, answer, answer, (a1, a2, p1, p2) => {
        const [aLow, aHigh] = a1 <= a2 ? [a1, a2] : [a2, a1];
        const [pLow, pHigh] = p1 <= p2 ? [p1, p2] : [p2, p1];
        const at = (a: bigint, p: bigint) =>
          computeCredit(
            input({ holdings: [hold('WETH', a)], prices: new Map([['WETH', fresh(p)]]), holdsCents: 5_000n }),
          );
        expect(at(aLow, p1).availableCents <= at(aHigh, p1).availableCents).toBe(true);
        expect(at(a1, pLow).availableCents <= at(a1, pHigh).availableCents).toBe(true);
      }),
    );
  });

  it("gives the decisions' borrow power (borrowPowerCents) exactly as borrowPower does, stale assets too", () => {
    const amount = fc.bigInt({ min: 0n, max: 10n ** 30n });
    const quote = fc.option(
      fc.record({
        answer: fc.bigInt({ min: -1n, max: 10n ** 14n }),
        updatedAtS: fc.integer({ min: NOW_S - 7_200, max: NOW_S + 120 }),
      }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom('WETH', 'WBTC', 'UNKNOWN'), amount, amount), { maxLength: 4 }),
        quote,
        quote,
        (holdings, weth, wbtc) => {
          const prices = new Map<string, PriceQuote>();
          if (weth !== null) prices.set('WETH', weth);
          if (wbtc !== null) prices.set('WBTC', wbtc);
          const credit = {
            holdings: holdings.map(([assetId, base, pending]) => hold(assetId, base, pending)),
            assets: ASSETS,
            prices,
            nowS: NOW_S,
          };
          const whole = borrowPower(credit);
          expect(borrowPowerCents(credit)).toEqual({
            borrowPowerCents: whole.borrowPowerCents,
            staleAssetIds: whole.staleAssetIds,
          });
        },
      ),
      { numRuns: 500 },
    );
  });

  it('reports no health factor without debt or holds', () => {
    const credit = computeCredit(input({ holdings: [hold('WETH', TOKEN(18))], prices }));
    expect(credit.healthFactorWad).toBeNull();
    const withHold = computeCredit(input({ holdings: [hold('WETH', TOKEN(18))], prices, holdsCents: 1n }));
    expect(withHold.healthFactorWad).toBe(WETH.liquidationThresholdBps * 30n * WAD); // $3,000 × 82.5 % / 1 cent
  });
});
