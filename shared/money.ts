/**
 * Exact money math on bigint. Every conversion names its rounding, and the rounding always favours
 * solvency: what the user owns rounds down, what the user owes rounds up.
 *
 * Units (always last in names):
 * - `…Cents`: USD minor units, the card's currency (Stripe amounts).
 * - `…Usdc`: USDC base units, 6 decimals (on-chain debt).
 * - `…Base`: a token's base units, `decimals` of them per token (collateral).
 * - `…E<n>` / price with `priceDecimals`: an oracle answer with its feed's decimals.
 * - `…Bps`: basis points, 10_000 = 100 %.
 */

export const BPS = 10_000n;
export const USDC_DECIMALS = 6;
/** 1 USD cent is 10_000 USDC base units. */
export const USDC_PER_CENT = 10n ** BigInt(USDC_DECIMALS - 2);
/** Health factor is reported with 18 decimals, like Aave (1e18 = 1.0). */
export const WAD = 10n ** 18n;
/** Largest integer a Redis Lua number (an IEEE double) holds exactly. */
export const DOUBLE_EXACT_MAX = 2n ** 53n - 1n;

export class MoneyError extends Error {
  readonly code = 'money_invalid';
}

function assertNonNegative(name: string, value: bigint): void {
  if (value < 0n) throw new MoneyError(`${name} must not be negative (got ${value})`);
}

/** 10^0 … 10^77, computed once: every weighted value needs two of them, every swipe several. */
const POWERS_OF_TEN = Array.from({ length: 78 }, (_, exponent) => 10n ** BigInt(exponent));

function pow10(exponent: number): bigint {
  const power = POWERS_OF_TEN[exponent];
  // Only integers 0…77 index the table (a fraction, a negative or NaN finds no entry).
  if (power === undefined || !Number.isInteger(exponent)) {
    throw new MoneyError(`decimal exponent out of range: ${exponent}`);
  }
  return power;
}

/** Floor division (toward −∞) for a positive denominator. `divFloor(7n, 2n) === 3n`, `divFloor(-7n, 2n) === -4n`. */
export function divFloor(numerator: bigint, denominator: bigint): bigint {
  if (denominator <= 0n) throw new MoneyError('denominator must be positive');
  const q = numerator / denominator;
  // bigint division truncates toward zero; step down for negative non-exact results.
  return numerator < 0n && q * denominator !== numerator ? q - 1n : q;
}

/** Ceiling division for a positive denominator. `divCeil(7n, 2n) === 4n`. */
export function divCeil(numerator: bigint, denominator: bigint): bigint {
  return -divFloor(-numerator, denominator);
}

/**
 * Value of a collateral balance in cents, rounded DOWN (the user's asset never rounds up).
 * cents = floor(amountBase × price × 100 / (10^tokenDecimals × 10^priceDecimals))
 */
export function collateralValueCentsFloor(
  amountBase: bigint,
  tokenDecimals: number,
  price: bigint,
  priceDecimals: number,
): bigint {
  assertNonNegative('amountBase', amountBase);
  assertNonNegative('price', price);
  return divFloor(amountBase * price * 100n, pow10(tokenDecimals) * pow10(priceDecimals));
}

/** An exact, unrounded amount of cents: `numerator / denominator`, the denominator positive. */
export interface CentsFraction {
  numerator: bigint;
  denominator: bigint;
}

/**
 * The exact value in cents of a collateral balance weighted by `weightBps` (10_000 for the whole
 * value, an LTV or a liquidation threshold otherwise), before any rounding:
 * amountBase × price × 100 × weightBps / (10^tokenDecimals × 10^priceDecimals × 10^4).
 * Add several with `sumCentsFloor` to round once over the sum.
 */
export function weightedValueCents(
  amountBase: bigint,
  tokenDecimals: number,
  price: bigint,
  priceDecimals: number,
  weightBps: bigint,
): CentsFraction {
  assertNonNegative('amountBase', amountBase);
  assertNonNegative('price', price);
  if (weightBps < 0n || weightBps > BPS) throw new MoneyError(`bps out of range: ${weightBps}`);
  return {
    numerator: amountBase * price * 100n * weightBps,
    denominator: pow10(tokenDecimals) * pow10(priceDecimals) * BPS,
  };
}

function gcd(a: bigint, b: bigint): bigint {
  let x = a < 0n ? -a : a;
  let y = b < 0n ? -b : b;
  while (y !== 0n) [x, y] = [y, x % y];
  return x;
}

/**
 * floor(Σ fractions), rounding once over the exact sum. Flooring each term and adding would lose up
 * to one cent per term; the credit model (ARCHITECTURE.md §2) floors the sum.
 * `sumCentsFloor([{ numerator: 1n, denominator: 2n }, { numerator: 1n, denominator: 2n }]) === 1n`.
 */
export function sumCentsFloor(fractions: readonly CentsFraction[]): bigint {
  let numerator = 0n;
  let denominator = 1n;
  for (let index = 0; index < fractions.length; index++) {
    const term = fractions[index]!;
    if (term.denominator <= 0n) throw new MoneyError('denominator must be positive');
    if (index === 0) {
      // The sum of one term is that term: no common denominator to find (most users hold one asset).
      numerator = term.numerator;
      denominator = term.denominator;
      continue;
    }
    // Over the least common denominator; the operands stay a few hundred bits at most.
    const common = (denominator / gcd(denominator, term.denominator)) * term.denominator;
    numerator = numerator * (common / denominator) + term.numerator * (common / term.denominator);
    denominator = common;
  }
  return divFloor(numerator, denominator);
}

/** Borrowing power of a collateral value: floor(valueCents × ltvBps / 10^4). */
export function applyBpsFloor(valueCents: bigint, bps: bigint): bigint {
  assertNonNegative('valueCents', valueCents);
  if (bps < 0n || bps > BPS) throw new MoneyError(`bps out of range: ${bps}`);
  return divFloor(valueCents * bps, BPS);
}

/**
 * Borrowing power contributed by one asset, in cents, rounded DOWN once over the whole product
 * (more exact, and never larger, than flooring the value first and applying the LTV after).
 */
export function borrowPowerCentsFloor(
  amountBase: bigint,
  tokenDecimals: number,
  price: bigint,
  priceDecimals: number,
  ltvBps: bigint,
): bigint {
  assertNonNegative('amountBase', amountBase);
  assertNonNegative('price', price);
  if (ltvBps < 0n || ltvBps > BPS) throw new MoneyError(`ltvBps out of range: ${ltvBps}`);
  return divFloor(amountBase * price * 100n * ltvBps, pow10(tokenDecimals) * pow10(priceDecimals) * BPS);
}

/** On-chain USDC debt as cents, rounded UP (the user's debt never rounds down). */
export function usdcToCentsCeil(amountUsdc: bigint): bigint {
  assertNonNegative('amountUsdc', amountUsdc);
  return divCeil(amountUsdc, USDC_PER_CENT);
}

/** Cents to USDC base units; exact (a cent is a whole number of USDC base units). */
export function centsToUsdc(amountCents: bigint): bigint {
  assertNonNegative('amountCents', amountCents);
  return amountCents * USDC_PER_CENT;
}

/**
 * Health factor with 18 decimals: Σ(value × LT) / debt. No debt gives `null` (infinite).
 * Rounded DOWN, so a position never looks safer than it is.
 */
export function healthFactorWadFloor(thresholdWeightedCents: bigint, debtCents: bigint): bigint | null {
  assertNonNegative('thresholdWeightedCents', thresholdWeightedCents);
  assertNonNegative('debtCents', debtCents);
  if (debtCents === 0n) return null;
  return divFloor(thresholdWeightedCents * WAD, debtCents);
}

/** Parses a decimal integer string (as stored in Redis or Postgres numeric) into a bigint. */
export function parseIntegerString(name: string, text: string | null | undefined): bigint {
  if (text === null || text === undefined || text === '') return 0n;
  if (!/^-?\d{1,78}$/.test(text)) throw new MoneyError(`${name} is not an integer: ${JSON.stringify(text)}`);
  return BigInt(text);
}

/** Formats cents as a dollar string for people ("$1,234.05"). Never used in arithmetic. */
export function formatCents(amountCents: bigint): string {
  const negative = amountCents < 0n;
  const abs = negative ? -amountCents : amountCents;
  const dollars = (abs / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const cents = (abs % 100n).toString().padStart(2, '0');
  return `${negative ? '-' : ''}$${dollars}.${cents}`;
}
