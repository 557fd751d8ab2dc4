/**
 * The test suite's face of the Stripe event builders (test/support/stripe-issuing-events.ts): the suite's
 * signing secret as the default, and fresh ids.
 */
import { randomUUID } from 'node:crypto';
import { randomStripeId, signPayload } from './stripe-issuing-events.ts';

export {
  type AuthorizationEventOptions,
  authorizationEvent,
  authorizationRequest,
  type RequestOptions,
  transactionEvent,
} from './stripe-issuing-events.ts';

export const TEST_WEBHOOK_SECRET = 'whsec_test_secret_for_the_suite_0001';

export function sign(
  payload: string,
  secret = TEST_WEBHOOK_SECRET,
  timestamp = Math.floor(Date.now() / 1000),
): string {
  return signPayload(payload, secret, timestamp);
}

export const newUserId = () => randomUUID();
export const newCardId = () => `ic_${randomStripeId()}`;
