/**
 * When a hold that Stripe never closes is released: the one hold-expiry policy of the program, used by
 * the decision engine, the Postgres fallback, the lifecycle handlers and the ledger writer alike.
 *
 * Stripe keeps most authorizations open "usually up to 7 days", and those of hotels, airlines and car
 * rental (and similar merchant classes) up to 31 days (support.stripe.com "common questions about
 * reversals"; docs.stripe.com/issuing/purchases/transactions: "hotels, airlines, car rental up to 31
 * days"). A hold released before Stripe gives up on the authorization lets the same money be spent
 * twice, so the long classes are taken broadly: the card networks' whole reserved ranges for airlines
 * (3000–3350), car rental (3351–3500) and lodging (3501–3999), plus the generic codes of the same
 * classes and of cruise lines.
 */
import type { Config } from '../config.ts';

export type HoldExpirySettings = Pick<Config, 'HOLD_TTL_S' | 'HOLD_TTL_LODGING_S'>;

/** Stripe's own windows: 7 days, 31 for the long-hold classes (the configuration's defaults). */
export const HOLD_EXPIRY_DEFAULTS = {
  HOLD_TTL_S: 7 * 86_400,
  HOLD_TTL_LODGING_S: 31 * 86_400,
} as const;

export type LongHoldClass = 'airline' | 'car_rental' | 'lodging' | 'cruise';

/** Network-reserved MCC ranges (inclusive) of named airlines, car-rental chains and hotel chains. */
const LONG_HOLD_RANGES: readonly (readonly [number, number, LongHoldClass])[] = [
  [3000, 3350, 'airline'],
  [3351, 3500, 'car_rental'],
  [3501, 3999, 'lodging'],
];

/** Generic MCCs of the same classes. */
const LONG_HOLD_CODES: ReadonlyMap<string, LongHoldClass> = new Map([
  ['4511', 'airline'], // Airlines, air carriers
  ['4582', 'airline'], // Airports, flying fields, airport terminals
  ['7512', 'car_rental'], // Car rental agencies
  ['7513', 'car_rental'], // Truck and utility trailer rentals
  ['7519', 'car_rental'], // Motor home and recreational vehicle rentals
  ['7011', 'lodging'], // Hotels, motels, resorts
  ['7012', 'lodging'], // Timeshares
  ['7033', 'lodging'], // Trailer parks, campgrounds
  ['4411', 'cruise'], // Steamship and cruise lines
]);

/** The long-hold class of a merchant category code, or null for the 7-day default. */
export function longHoldClassOf(mcc: string | null): LongHoldClass | null {
  if (mcc === null) return null;
  const named = LONG_HOLD_CODES.get(mcc);
  if (named !== undefined) return named;
  if (!/^\d{4}$/.test(mcc)) return null;
  const code = Number(mcc);
  for (const [from, to, kind] of LONG_HOLD_RANGES) if (code >= from && code <= to) return kind;
  return null;
}

/**
 * When a hold granted at `nowMs` for merchant category `mcc` expires.
 * @example holdExpiresAtMs(config, '7011', Date.now()) // 31 days from now with the default settings
 */
export function holdExpiresAtMs(settings: HoldExpirySettings, mcc: string | null, nowMs: number): number {
  const ttlS = longHoldClassOf(mcc) === null ? settings.HOLD_TTL_S : settings.HOLD_TTL_LODGING_S;
  return nowMs + ttlS * 1000;
}

/**
 * How long a closed authorization's captured part stays held, at least, waiting for its
 * `issuing_transaction.created` (ARCHITECTURE.md §4). Stripe retries an undelivered event for up to
 * three days in live mode; a week leaves room for an outage on our side as well.
 */
export const CAPTURE_BOOKING_WAIT_S = 7 * 86_400;

/** The earliest a closed authorization's captured part, held since `closedAtMs`, may be released. */
export function capturedHoldExpiresAtMs(closedAtMs: number): number {
  return closedAtMs + CAPTURE_BOOKING_WAIT_S * 1000;
}
