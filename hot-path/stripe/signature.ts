/**
 * Stripe-Signature verification on the raw body, with the stripe library's own verifier
 * (HMAC-SHA256 over `${t}.${body}`, constant-time comparison, any of several `v1` values).
 * Any configured secret may match (secret rollover). The library's tolerance check is one-sided,
 * so a timestamp too far in the future is refused here as well.
 */
import Stripe from 'stripe';

export type SignatureResult =
  | { ok: true }
  | { ok: false; problem: 'missing_header' | 'bad_signature' | 'expired' };

export function verifyStripeSignature(
  rawBody: string,
  header: string | undefined,
  secrets: readonly string[],
  toleranceS: number,
  nowS: number = Math.floor(Date.now() / 1000),
): SignatureResult {
  if (header === undefined || header.length === 0 || header.length > 4_096)
    return { ok: false, problem: 'missing_header' };
  const t = /(?:^|,)t=(\d{1,12})(?:,|$)/.exec(header)?.[1];
  if (t === undefined) return { ok: false, problem: 'bad_signature' };
  if (Math.abs(nowS - Number(t)) > toleranceS) return { ok: false, problem: 'expired' };
  for (const secret of secrets) {
    try {
      Stripe.webhooks.signature?.verifyHeader(rawBody, header, secret, toleranceS, undefined, nowS);
      return { ok: true };
    } catch {
      // Try the next secret; the library throws on any mismatch.
    }
  }
  return { ok: false, problem: 'bad_signature' };
}
