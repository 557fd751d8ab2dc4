/**
 * What the dashboard tells a user about a declined authorization. Keyed by the hot path's stable
 * reason codes (shared/outbox/records.ts), so a new reason fails the typecheck here until it has a message.
 * Messages say what the user can do; they never reveal internal detail (risk rules, system state).
 */
import type { DeclineReason } from '../../shared/outbox/records.ts';

export const DECLINE_MESSAGES: Record<DeclineReason, string> = {
  unknown_card: 'This card is not recognised. Contact support if you think this is a mistake.',
  card_inactive: 'This card is not active. Activate it or use another card.',
  card_frozen: 'Your card is frozen. Unfreeze it in the app to pay with it.',
  account_inactive: 'Your account is not active. Contact support.',
  blocked_mcc: 'Payments to this type of merchant are blocked on your card.',
  velocity_limit: 'Too many payments in a short time. Wait a minute and try again.',
  daily_limit: 'This payment is over your daily spending limit. You can change the limit in the app.',
  stale_price: 'We could not value your collateral just now. Try again in a few minutes.',
  insufficient_credit: 'Not enough available credit. Add collateral or repay to spend more.',
  fallback_limit: 'We could not approve this payment just now. Try again in a moment.',
  invalid_request: 'This payment could not be processed. Try again or contact support.',
  system_unavailable: 'We could not approve this payment just now. Try again in a moment.',
  replication_unconfirmed: 'We could not approve this payment just now. Try again in a moment.',
};

export const DECLINE_MESSAGE_FALLBACK = 'This payment was declined. Contact support if it keeps happening.';

/** The user-facing message for a stored decline reason (unknown or missing reasons get the fallback). */
export function declineMessage(reason: string | null): string {
  if (reason !== null && Object.hasOwn(DECLINE_MESSAGES, reason)) {
    return DECLINE_MESSAGES[reason as DeclineReason];
  }
  return DECLINE_MESSAGE_FALLBACK;
}
