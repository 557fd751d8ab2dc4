/**
 * The signature check agrees with the stripe library's own verifier (the reference) on generated
 * payloads, secrets and headers, and refuses the header shapes an attacker would try.
 */
import fc from 'fast-check';
import Stripe from 'stripe';
import { describe, expect, it } from 'vitest';
import { verifyStripeSignature } from './signature.ts';

const TOLERANCE_S = 300;

function libraryAccepts(body: string, header: string, secret: string, nowS: number): boolean {
  try {
    Stripe.webhooks.signature?.verifyHeader(body, header, secret, TOLERANCE_S, undefined, nowS);
    return true;
  } catch {
    return false;
  }
}

describe('verifyStripeSignature', () => {
  it('agrees with the stripe library on generated bodies, secrets, clocks and tampering', () => {
    fc.assert(
      fc.property(
        // Non-empty: the library refuses an empty payload outright (ours checks it; the route then declines it).
        fc.string({ unit: 'binary', minLength: 1, maxLength: 400 }),
        fc.string({ minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1_600_000_000, max: 2_000_000_000 }),
        fc.integer({ min: -250, max: 0 }),
        fc.boolean(),
        (body, secretTail, nowS, ageS, tamper) => {
          const secret = `whsec_${secretTail}`;
          const timestamp = nowS + ageS;
          const header = Stripe.webhooks.generateTestHeaderString({ payload: body, secret, timestamp });
          const sent = tamper ? `${body}x` : body;
          const ours = verifyStripeSignature(sent, header, [secret], TOLERANCE_S, nowS).ok;
          expect(ours).toBe(libraryAccepts(sent, header, secret, nowS));
          expect(ours).toBe(!tamper);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('accepts any configured secret and any of several v1 values, with spaces and other schemes', () => {
    const body = '{"id":"evt_1"}';
    const nowS = 1_800_000_000;
    const a = Stripe.webhooks.generateTestHeaderString({ payload: body, secret: 'whsec_a', timestamp: nowS });
    const b = Stripe.webhooks.generateTestHeaderString({ payload: body, secret: 'whsec_b', timestamp: nowS });
    const v1b = b.split(',').find((p) => p.startsWith('v1='))!;
    const both = `${a}, ${v1b}, v0=abc`;
    expect(verifyStripeSignature(body, both, ['whsec_b'], TOLERANCE_S, nowS)).toEqual({ ok: true });
    expect(verifyStripeSignature(body, a, ['whsec_x', 'whsec_a'], TOLERANCE_S, nowS)).toEqual({ ok: true });
    expect(verifyStripeSignature(body, a, ['whsec_x'], TOLERANCE_S, nowS)).toEqual({
      ok: false,
      problem: 'bad_signature',
    });
  });

  it('refuses missing, malformed, old, future and unsigned headers', () => {
    const body = '{}';
    const nowS = 1_800_000_000;
    const signed = (timestamp: number) =>
      Stripe.webhooks.generateTestHeaderString({ payload: body, secret: 'whsec_a', timestamp });
    const check = (header: string | undefined) =>
      verifyStripeSignature(body, header, ['whsec_a'], TOLERANCE_S, nowS);
    expect(check(undefined)).toEqual({ ok: false, problem: 'missing_header' });
    expect(check('')).toEqual({ ok: false, problem: 'missing_header' });
    expect(check('x'.repeat(5_000))).toEqual({ ok: false, problem: 'missing_header' });
    expect(check(signed(nowS - 301))).toEqual({ ok: false, problem: 'expired' });
    expect(check(signed(nowS + 301))).toEqual({ ok: false, problem: 'expired' });
    expect(check(signed(nowS - 300))).toEqual({ ok: true });
    const v1 = signed(nowS)
      .split(',')
      .find((p) => p.startsWith('v1='))!;
    expect(check(v1)).toEqual({ ok: false, problem: 'bad_signature' }); // no timestamp
    expect(check(`t=${nowS}`)).toEqual({ ok: false, problem: 'bad_signature' }); // no signature
    expect(check(`t=abc,${v1}`)).toEqual({ ok: false, problem: 'bad_signature' });
    expect(check(`t=${nowS},v1=${'0'.repeat(64)}`)).toEqual({ ok: false, problem: 'bad_signature' });
    expect(check(`t=${nowS},v1=${v1.slice(3, 40)}`)).toEqual({ ok: false, problem: 'bad_signature' }); // short
    // The signature of another timestamp does not carry over.
    expect(check(`t=${nowS},${signed(nowS - 1).split(',')[1]}`)).toEqual({
      ok: false,
      problem: 'bad_signature',
    });
  });
});
