/**
 * Typed handles for objects created by the custom migrations (drizzle-kit cannot express them, so
 * they are kept out of `schema.ts`, which is the generator's input).
 */
import {
  bigint,
  index,
  jsonb,
  pgMaterializedView,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uuid,
} from 'drizzle-orm/pg-core';

/** Every Stripe event as received. Partitioned by month on `created_at` (the event's own `created`). */
export const cardEvents = pgTable(
  'card_events',
  {
    id: text('id').notNull(),
    type: text('type').notNull(),
    userId: uuid('user_id'),
    objectId: text('object_id'),
    payload: jsonb('payload').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    receivedAt: timestamp('received_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.id, t.createdAt] }),
    index('card_events_user_created_idx').on(t.userId, t.createdAt.desc()),
  ],
);

/** Per-user summary for dashboards and support; `REFRESH MATERIALIZED VIEW CONCURRENTLY`. */
export const userPositionSummary = pgMaterializedView('user_position_summary', {
  userId: uuid('user_id').notNull(),
  assetsHeld: bigint('assets_held', { mode: 'bigint' }).notNull(),
  debtOnchainUsdc: text('debt_onchain_usdc').notNull(),
  unsettledCents: bigint('unsettled_cents', { mode: 'bigint' }).notNull(),
  holdsCents: bigint('holds_cents', { mode: 'bigint' }).notNull(),
  openAuthorizations: bigint('open_authorizations', { mode: 'bigint' }).notNull(),
  lastAuthorizationAt: timestamp('last_authorization_at', { withTimezone: true }),
}).existing();
