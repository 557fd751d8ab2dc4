// Proves the bigint money math rounds exactly as named and always against the user: fast-check properties compare every result with the exact rational value by bigint cross-multiplication, plus hand-picked edge cases.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyBpsFloor,
  BPS,
  borrowPowerCentsFloor,
  type CentsFraction,
  centsToUsdc,
  collateralValueCentsFloor,
  divCeil,
  divFloor,
  formatCents,
  healthFactorWadFloor,
  MoneyError,
  parseIntegerString,
  sumCentsFloor,
  USDC_PER_CENT,
  usdcToCentsCeil,
  WAD,
  weightedValueCents,
} from './money.ts';

const MAX_BALANCE = 2n ** 200n;
const anyBigint = fc.bigInt({ min: -(2n ** 256n), max: 2n ** 256n });
const positive = fc.bigInt({ min: 1n, max: 2n ** 128n });
const amount = fc.bigInt({ min: 0n, max: MAX_BALANCE });
const price = fc.bigInt({ min: 0n, max: 2n ** 96n });
const decimals = fc.integer({ min: 0, max: 36 });
const bps = fc.bigInt({ min: 0n, max: BPS });
const cents = fc.bigInt({ min: 0n, max: 2n ** 200n });

/** 10^tokenDecimals × 10^priceDecimals: the denominator of a value in token-price units. */
function scale(tokenDecimals: number, priceDecimals: number): bigint {
  return 10n ** BigInt(tokenDecimals) * 10n ** BigInt(priceDecimals);
}

describe('divFloor and divCeil', () => {
  it('match their definitions: q·d ≤ n < (q+1)·d and (c−1)·d < n ≤ c·d, for any sign of n', () => {
    fc.assert(
      fc.property(anyBigint, positive, (n, d) => {
        const q = divFloor(n, d);
        const c = divCeil(n, d);
        expect(q * d <= n && n < (q + 1n) * d).toBe(true);
        expect((c - 1n) * d < n && n <= c * d).toBe(true);
        // They agree exactly when d divides n, and differ by one otherwise.
        expect(c - q).toBe(n % d === 0n ? 0n : 1n);
      }),
      { numRuns: 1000 },
    );
  });

  it('round toward −∞ and +∞ on the documented examples, including negatives', () => {
    expect([divFloor(7n, 2n), divCeil(7n, 2n)]).toEqual([3n, 4n]);
    expect([divFloor(-7n, 2n), divCeil(-7n, 2n)]).toEqual([-4n, -3n]);
    expect([divFloor(-8n, 2n), divCeil(-8n, 2n)]).toEqual([-4n, -4n]);
    expect([divFloor(0n, 5n), divCeil(0n, 5n)]).toEqual([0n, 0n]);
  });

  it('refuse a zero or negative denominator', () => {
    expect(() => divFloor(1n, 0n)).toThrow(MoneyError);
    expect(() => divFloor(1n, -3n)).toThrow(MoneyError);
    expect(() => divCeil(1n, 0n)).toThrow(MoneyError);
  });
});

describe('cents and USDC', () => {
  it('round-trips cents → USDC → cents exactly', () => {
    fc.assert(
      fc.property(cents, (c) => {
        expect(usdcToCentsCeil(centsToUsdc(c))).toBe(c);
      }),
      { numRuns: 500 },
    );
  });

  it('never rounds debt down: USDC → cents → USDC covers the debt, by less than one cent', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: MAX_BALANCE }), (usdc) => {
        const debtCents = usdcToCentsCeil(usdc);
        // Cross-multiplied: debtCents ≥ usdc / USDC_PER_CENT, and debtCents − 1 < usdc / USDC_PER_CENT.
        expect(debtCents * USDC_PER_CENT >= usdc).toBe(true);
        expect((debtCents - 1n) * USDC_PER_CENT < usdc).toBe(true);
        expect(centsToUsdc(debtCents) - usdc < USDC_PER_CENT).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('is monotonic: more USDC debt is never fewer cents', () => {
    fc.assert(
      fc.property(amount, amount, (a, b) => {
        const [low, high] = a <= b ? [a, b] : [b, a];
        expect(usdcToCentsCeil(low) <= usdcToCentsCeil(high)).toBe(true);
      }),
    );
  });

  it('has 1-cent margins at the unit boundary', () => {
    expect(USDC_PER_CENT).toBe(10_000n);
    expect(usdcToCentsCeil(0n)).toBe(0n);
    expect(usdcToCentsCeil(1n)).toBe(1n); // one base unit of debt already costs a whole cent
    expect(usdcToCentsCeil(10_000n)).toBe(1n);
    expect(usdcToCentsCeil(10_001n)).toBe(2n);
    expect(usdcToCentsCeil(2_000_000_000n)).toBe(200_000n); // 2,000 USDC
    expect(centsToUsdc(1n)).toBe(10_000n);
  });

  it('refuses negative amounts', () => {
    expect(() => usdcToCentsCeil(-1n)).toThrow(MoneyError);
    expect(() => centsToUsdc(-1n)).toThrow(MoneyError);
  });
});

describe('collateral value', () => {
  it('is never more than the exact value, and less by under one cent', () => {
    fc.assert(
      fc.property(amount, decimals, price, decimals, (a, td, p, pd) => {
        const value = collateralValueCentsFloor(a, td, p, pd);
        const exactNumerator = a * p * 100n;
        const denominator = scale(td, pd);
        expect(value * denominator <= exactNumerator).toBe(true);
        expect(exactNumerator < (value + 1n) * denominator).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('is monotonic in the balance and in the price', () => {
    fc.assert(
      fc.property(amount, amount, price, price, decimals, decimals, (a1, a2, p1, p2, td, pd) => {
        const [aLow, aHigh] = a1 <= a2 ? [a1, a2] : [a2, a1];
        const [pLow, pHigh] = p1 <= p2 ? [p1, p2] : [p2, p1];
        expect(
          collateralValueCentsFloor(aLow, td, p1, pd) <= collateralValueCentsFloor(aHigh, td, p1, pd),
        ).toBe(true);
        expect(
          collateralValueCentsFloor(a1, td, pLow, pd) <= collateralValueCentsFloor(a1, td, pHigh, pd),
        ).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('handles 18-decimal tokens: one wei is worth nothing, one token its price', () => {
    const ethPrice = 3_000n * 10n ** 8n; // $3,000 with 8 decimals
    expect(collateralValueCentsFloor(1n, 18, ethPrice, 8)).toBe(0n);
    expect(collateralValueCentsFloor(10n ** 18n, 18, ethPrice, 8)).toBe(300_000n);
    expect(collateralValueCentsFloor(10n ** 18n - 1n, 18, ethPrice, 8)).toBe(299_999n);
    // 1 cent is 10^18 / 300,000 wei = 3,333,333,333,333.33…: the whole-cent boundary sits between these.
    expect(collateralValueCentsFloor(3_333_333_333_333n, 18, ethPrice, 8)).toBe(0n);
    expect(collateralValueCentsFloor(3_333_333_333_334n, 18, ethPrice, 8)).toBe(1n);
  });

  it('handles balances up to 2^200 without losing a unit', () => {
    // A token with no decimals priced at exactly $1 (price 1 with 0 decimals): value = balance × 100 cents.
    expect(collateralValueCentsFloor(MAX_BALANCE, 0, 1n, 0)).toBe(MAX_BALANCE * 100n);
    expect(collateralValueCentsFloor(MAX_BALANCE - 1n, 0, 1n, 0)).toBe(MAX_BALANCE * 100n - 100n);
    // 2^200 wei at $1 with 8-decimal price: floor(2^200 × 100 / 10^18), checked by cross-multiplication.
    const value = collateralValueCentsFloor(MAX_BALANCE, 18, 10n ** 8n, 8);
    expect(value * 10n ** 18n <= MAX_BALANCE * 100n).toBe(true);
    expect(MAX_BALANCE * 100n < (value + 1n) * 10n ** 18n).toBe(true);
    // A double would have lost the low digits of this number.
    expect(Number.isSafeInteger(Number(value))).toBe(false);
  });

  it('has a 1-cent margin for a 6-decimal $1 token: 10,000 base units are 1 cent, 9,999 are 0', () => {
    expect(collateralValueCentsFloor(10_000n, 6, 10n ** 8n, 8)).toBe(1n);
    expect(collateralValueCentsFloor(9_999n, 6, 10n ** 8n, 8)).toBe(0n);
  });

  it('refuses negative inputs and impossible decimals', () => {
    expect(() => collateralValueCentsFloor(-1n, 18, 1n, 8)).toThrow(MoneyError);
    expect(() => collateralValueCentsFloor(1n, 18, -1n, 8)).toThrow(MoneyError);
    expect(() => collateralValueCentsFloor(1n, 78, 1n, 8)).toThrow(MoneyError);
    expect(() => collateralValueCentsFloor(1n, 1.5, 1n, 8)).toThrow(MoneyError);
    expect(() => collateralValueCentsFloor(1n, -1, 1n, 8)).toThrow(MoneyError);
  });
});

describe('borrow power', () => {
  it('is never more than the exact LTV-weighted value, and less by under one cent', () => {
    fc.assert(
      fc.property(amount, decimals, price, decimals, bps, (a, td, p, pd, ltv) => {
        const power = borrowPowerCentsFloor(a, td, p, pd, ltv);
        const exactNumerator = a * p * 100n * ltv;
        const denominator = scale(td, pd) * BPS;
        expect(power * denominator <= exactNumerator).toBe(true);
        expect(exactNumerator < (power + 1n) * denominator).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('rounds once: at least the twice-floored value, never above the collateral value', () => {
    fc.assert(
      fc.property(amount, decimals, price, decimals, bps, (a, td, p, pd, ltv) => {
        const power = borrowPowerCentsFloor(a, td, p, pd, ltv);
        const value = collateralValueCentsFloor(a, td, p, pd);
        expect(power >= applyBpsFloor(value, ltv)).toBe(true);
        expect(power <= value).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('is monotonic in collateral, price and LTV', () => {
    fc.assert(
      fc.property(amount, amount, price, price, bps, bps, decimals, (a1, a2, p1, p2, l1, l2, td) => {
        const [aLow, aHigh] = a1 <= a2 ? [a1, a2] : [a2, a1];
        const [pLow, pHigh] = p1 <= p2 ? [p1, p2] : [p2, p1];
        const [lLow, lHigh] = l1 <= l2 ? [l1, l2] : [l2, l1];
        expect(
          borrowPowerCentsFloor(aLow, td, p1, 8, l1) <= borrowPowerCentsFloor(aHigh, td, p1, 8, l1),
        ).toBe(true);
        expect(
          borrowPowerCentsFloor(a1, td, pLow, 8, l1) <= borrowPowerCentsFloor(a1, td, pHigh, 8, l1),
        ).toBe(true);
        expect(
          borrowPowerCentsFloor(a1, td, p1, 8, lLow) <= borrowPowerCentsFloor(a1, td, p1, 8, lHigh),
        ).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('has 1-cent margins: $1.00 at 80 % is 80 cents, one base unit less is 79', () => {
    expect(borrowPowerCentsFloor(1_000_000n, 6, 10n ** 8n, 8, 8_000n)).toBe(80n);
    expect(borrowPowerCentsFloor(999_999n, 6, 10n ** 8n, 8, 8_000n)).toBe(79n);
    expect(applyBpsFloor(100n, 8_000n)).toBe(80n);
    expect(applyBpsFloor(99n, 8_000n)).toBe(79n);
  });

  it('refuses an LTV outside 0..10,000 bps', () => {
    expect(() => borrowPowerCentsFloor(1n, 0, 1n, 0, 10_001n)).toThrow(MoneyError);
    expect(() => borrowPowerCentsFloor(1n, 0, 1n, 0, -1n)).toThrow(MoneyError);
    expect(() => applyBpsFloor(1n, 10_001n)).toThrow(MoneyError);
    expect(() => weightedValueCents(1n, 0, 1n, 0, 10_001n)).toThrow(MoneyError);
  });
});

describe('weighted sums', () => {
  const fraction = fc.record({
    numerator: fc.bigInt({ min: 0n, max: 2n ** 160n }),
    denominator: fc.bigInt({ min: 1n, max: 10n ** 30n }),
  });

  it('floors the exact sum once (checked against the product of the denominators)', () => {
    fc.assert(
      fc.property(fc.array(fraction, { maxLength: 6 }), (terms: CentsFraction[]) => {
        const sum = sumCentsFloor(terms);
        const product = terms.reduce((acc, t) => acc * t.denominator, 1n);
        const exactNumerator = terms.reduce((acc, t) => acc + t.numerator * (product / t.denominator), 0n);
        expect(sum * product <= exactNumerator).toBe(true);
        expect(exactNumerator < (sum + 1n) * product).toBe(true);
        // Flooring each term first can only lose, by less than one cent per term.
        const flooredEach = terms.reduce((acc, t) => acc + divFloor(t.numerator, t.denominator), 0n);
        expect(sum >= flooredEach && sum - flooredEach < BigInt(Math.max(terms.length, 1))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('gives one cent for two half cents, where flooring each would give none', () => {
    const half = weightedValueCents(1n, 2, 10n ** 8n, 8, 5_000n); // 1 cent at 50 % = ½ cent
    expect(sumCentsFloor([half])).toBe(0n);
    expect(sumCentsFloor([half, half])).toBe(1n);
    expect(sumCentsFloor([])).toBe(0n);
  });

  it('agrees with the single-asset functions for one term', () => {
    fc.assert(
      fc.property(amount, decimals, price, decimals, bps, (a, td, p, pd, ltv) => {
        expect(sumCentsFloor([weightedValueCents(a, td, p, pd, BPS)])).toBe(
          collateralValueCentsFloor(a, td, p, pd),
        );
        expect(sumCentsFloor([weightedValueCents(a, td, p, pd, ltv)])).toBe(
          borrowPowerCentsFloor(a, td, p, pd, ltv),
        );
      }),
    );
  });

  it('refuses a non-positive denominator', () => {
    expect(() => sumCentsFloor([{ numerator: 1n, denominator: 0n }])).toThrow(MoneyError);
  });
});

describe('health factor', () => {
  it('is the floored WAD ratio, never above the exact one, and null without debt', () => {
    fc.assert(
      fc.property(cents, fc.bigInt({ min: 1n, max: 2n ** 128n }), (weighted, debt) => {
        const hf = healthFactorWadFloor(weighted, debt);
        expect(hf).not.toBeNull();
        const value = hf ?? 0n;
        expect(value * debt <= weighted * WAD).toBe(true);
        expect(weighted * WAD < (value + 1n) * debt).toBe(true);
      }),
    );
    expect(healthFactorWadFloor(123n, 0n)).toBeNull();
    expect(healthFactorWadFloor(2n, 3n)).toBe(666_666_666_666_666_666n);
  });
});

describe('parsing and formatting', () => {
  it('parses what it prints, for integers up to 78 digits', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 78n - 1n), max: 10n ** 78n - 1n }), (n) => {
        expect(parseIntegerString('n', n.toString())).toBe(n);
      }),
    );
  });

  it('treats missing as zero and refuses anything but an integer', () => {
    expect(parseIntegerString('n', null)).toBe(0n);
    expect(parseIntegerString('n', undefined)).toBe(0n);
    expect(parseIntegerString('n', '')).toBe(0n);
    for (const bad of ['1.5', '1e3', ' 1', '0x10', 'abc', '1'.repeat(79)]) {
      expect(() => parseIntegerString('n', bad)).toThrow(MoneyError);
    }
  });

  it('formats cents for people', () => {
    expect(formatCents(0n)).toBe('$0.00');
    expect(formatCents(5n)).toBe('$0.05');
    expect(formatCents(123_405n)).toBe('$1,234.05');
    expect(formatCents(-100_000_000n)).toBe('-$1,000,000.00');
  });
});
