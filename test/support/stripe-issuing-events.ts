/**
 * Builds Stripe Issuing events in Stripe's wire format and signs them with the stripe library's
 * test-header helper, exactly as Stripe signs its webhooks. For whatever has to stand in for Stripe's
 * servers, which cannot be reached from here: the test suite (test/support/stripe.ts adds the suite's
 * secret) and `npm run demo` against the local stack.
 */
import { randomBytes } from 'node:crypto';
import Stripe from 'stripe';

/** The API version the builders stamp on events unless told otherwise (STRIPE_API_VERSION's default). */
export const STRIPE_EVENT_API_VERSION = '2025-03-31.basil';

/** The `Stripe-Signature` header for `payload`, as Stripe computes it. */
export function signPayload(
  payload: string,
  secret: string,
  timestampS = Math.floor(Date.now() / 1000),
): string {
  return Stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp: timestampS });
}

export const randomStripeId = () => randomBytes(8).toString('hex');
const rid = randomStripeId;

export interface RequestOptions {
  cardId: string;
  amountCents: number;
  authorizationId?: string;
  eventId?: string;
  mcc?: string;
  controllable?: boolean;
  /** Earlier requests on this authorization (an incremental authorization has ≥ 1). */
  requestHistory?: number;
  currency?: string;
  createdS?: number;
  /** The event's `api_version` (the account's Stripe API version). */
  apiVersion?: string;
}

export function authorizationRequest(options: RequestOptions) {
  const created = options.createdS ?? Math.floor(Date.now() / 1000);
  return {
    id: options.eventId ?? `evt_${rid()}`,
    object: 'event',
    api_version: options.apiVersion ?? STRIPE_EVENT_API_VERSION,
    created,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type: 'issuing_authorization.request',
    data: {
      object: {
        id: options.authorizationId ?? `iauth_${rid()}`,
        object: 'issuing.authorization',
        amount: 0,
        approved: false,
        status: 'pending',
        currency: 'usd',
        created,
        card: { id: options.cardId, object: 'issuing.card', status: 'active' },
        cardholder: 'ich_test',
        merchant_amount: 0,
        merchant_currency: 'usd',
        merchant_data: {
          category: 'misc',
          category_code: options.mcc ?? '5411',
          name: 'TEST GROCER',
          city: 'Austin',
          country: 'US',
        },
        metadata: {},
        pending_request: {
          amount: options.amountCents,
          currency: options.currency ?? 'usd',
          is_amount_controllable: options.controllable ?? false,
          merchant_amount: options.amountCents,
          merchant_currency: 'usd',
        },
        request_history: Array.from({ length: options.requestHistory ?? 0 }, () => ({ approved: true })),
        transactions: [],
      },
    },
  };
}

export interface AuthorizationEventOptions {
  type: 'issuing_authorization.created' | 'issuing_authorization.updated';
  cardId: string;
  authorizationId: string;
  amountCents: number;
  approved: boolean;
  status: 'pending' | 'closed' | 'reversed' | 'expired';
  requestHistory: number;
  createdS: number;
  eventId?: string;
  mcc?: string;
  apiVersion?: string;
}

/** Stripe's event envelope around `object`. */
function envelope<T>(
  o: { eventId?: string | undefined; apiVersion?: string | undefined; createdS: number },
  type: string,
  object: T,
) {
  return {
    id: o.eventId ?? `evt_${rid()}`,
    object: 'event',
    api_version: o.apiVersion ?? STRIPE_EVENT_API_VERSION,
    created: o.createdS,
    livemode: false,
    type,
    data: { object },
  };
}

export function authorizationEvent(o: AuthorizationEventOptions) {
  return envelope(o, o.type, {
    id: o.authorizationId,
    object: 'issuing.authorization',
    amount: o.amountCents,
    approved: o.approved,
    status: o.status,
    currency: 'usd',
    created: o.createdS,
    card: { id: o.cardId, object: 'issuing.card' },
    merchant_data: { category_code: o.mcc ?? '5411', name: 'TEST GROCER' },
    pending_request: null,
    request_history: Array.from({ length: o.requestHistory }, () => ({ approved: o.approved })),
  });
}

export function transactionEvent(o: {
  cardId: string;
  type: 'capture' | 'refund';
  amountCents: number;
  authorizationId: string | null;
  createdS: number;
  transactionId?: string;
  eventId?: string;
  apiVersion?: string;
}) {
  return envelope(o, 'issuing_transaction.created', {
    id: o.transactionId ?? `ipi_${rid()}`,
    object: 'issuing.transaction',
    // Stripe: a capture takes money out of the Issuing balance (negative), a refund puts it back.
    amount: o.type === 'capture' ? -o.amountCents : o.amountCents,
    currency: 'usd',
    type: o.type,
    authorization: o.authorizationId,
    card: o.cardId,
    created: o.createdS,
    merchant_data: { category_code: '5411', name: 'TEST GROCER' },
  });
}
