/**
 * The Stripe Issuing event shapes we accept (zod, bounded). Unknown fields are allowed and ignored:
 * Stripe adds fields over time. Only what a decision or the books need is required.
 */
import { z } from 'zod';
import { policyLimits } from '../policy/limits.ts';

const stripeId = (prefix: string) => z.string().startsWith(prefix).max(255);
const cents = z.number().int().min(-policyLimits.amountCentsMax).max(policyLimits.amountCentsMax);
const unix = z.number().int().min(0).max(4_102_444_800);

const merchantData = z.looseObject({
  category: z.string().max(128).optional(),
  category_code: z.string().max(8),
  name: z.string().max(255).nullable().optional(),
});

export const authorizationObject = z.looseObject({
  id: stripeId('iauth_'),
  object: z.literal('issuing.authorization'),
  amount: cents,
  approved: z.boolean(),
  status: z.enum(['pending', 'closed', 'reversed', 'expired']),
  currency: z.string().length(3),
  created: unix,
  card: z.looseObject({ id: stripeId('ic_') }),
  merchant_data: merchantData,
  pending_request: z
    .looseObject({
      amount: cents.min(0),
      currency: z.string().length(3),
      is_amount_controllable: z.boolean(),
    })
    .nullable()
    .optional(),
  request_history: z.array(z.unknown()).max(1_000).default([]),
  /** The authorization's transactions (captures, refunds), as Stripe lists them; read leniently. */
  transactions: z.array(z.unknown()).max(1_000).optional(),
});
export type AuthorizationObject = z.infer<typeof authorizationObject>;

export const transactionObject = z.looseObject({
  id: stripeId('ipi_'),
  object: z.literal('issuing.transaction'),
  amount: cents,
  currency: z.string().length(3),
  type: z.enum(['capture', 'refund']),
  authorization: z.string().max(255).nullable(),
  card: z.string().max(255),
  created: unix,
  merchant_data: merchantData.optional(),
});
export type TransactionObject = z.infer<typeof transactionObject>;

const envelope = {
  id: stripeId('evt_'),
  object: z.literal('event'),
  created: unix,
  livemode: z.boolean().optional(),
  api_version: z.string().max(64).nullable().optional(),
};

export const authorizationRequestEvent = z.looseObject({
  ...envelope,
  type: z.literal('issuing_authorization.request'),
  data: z.looseObject({
    object: authorizationObject.extend({
      pending_request: z.looseObject({
        amount: cents.min(0),
        currency: z.string().length(3),
        is_amount_controllable: z.boolean(),
      }),
    }),
  }),
});
export type AuthorizationRequestEvent = z.infer<typeof authorizationRequestEvent>;

export const lifecycleEvent = z.discriminatedUnion('type', [
  z.looseObject({
    ...envelope,
    type: z.enum(['issuing_authorization.created', 'issuing_authorization.updated']),
    data: z.looseObject({ object: authorizationObject }),
  }),
  z.looseObject({
    ...envelope,
    type: z.literal('issuing_transaction.created'),
    data: z.looseObject({ object: transactionObject }),
  }),
]);
export type LifecycleEvent = z.infer<typeof lifecycleEvent>;
export const LIFECYCLE_TYPES: ReadonlySet<string> = new Set([
  'issuing_authorization.created',
  'issuing_authorization.updated',
  'issuing_transaction.created',
]);

/** Just enough of any event to log it when its type is not one we process. */
export const anyEvent = z.looseObject({ id: z.string().max(255), type: z.string().max(128) });
