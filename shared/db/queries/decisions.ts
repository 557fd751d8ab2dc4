/**
 * `decisions`: one row per authorization request decided (keyed by `event_id`; the decision id is
 * unique too). Written by the hot path's Postgres fallback (one row, source `postgres`) and by the
 * ledger writer (a batch of Redis's decisions, and Redis's decision replacing a fallback's,
 * `replaceDecisions`). Both roles may insert every column; only the outcome columns may be updated by
 * the writer (drizzle/0016).
 */
import type { Sql, Tx } from '../client.ts';
import { unnestRows } from '../unnest.ts';

export interface DecisionRow {
  id: string;
  eventId: string;
  authorizationId: string | null;
  userId: string | null;
  cardId: string;
  approved: boolean;
  requestedCents: bigint;
  approvedCents: bigint;
  reason: string;
  source: 'redis' | 'postgres';
  latencyUs: number;
  decidedAt: Date;
}

/**
 * Inserts the decisions whose event (and id) is new, in one statement, in the order given (callers
 * that race sort them by event id). Returns the event ids inserted: a caller that must be the first to
 * decide checks its own is there. No conflict target: a replay conflicts on event_id, and a decision
 * id is unique too. Booleans travel as text (postgres.js serialises a JS boolean array as a scalar).
 */
export async function insertDecisions(tx: Sql | Tx, rows: readonly DecisionRow[]): Promise<Set<string>> {
  if (rows.length === 0) return new Set();
  const inserted = await tx<{ event_id: string }[]>`
    insert into decisions (id, event_id, authorization_id, user_id, card_id,
      approved, requested_cents, approved_cents, reason, source, latency_us, decided_at)
    select v.id, v.event_id, v.authorization_id, v.user_id, v.card_id, v.approved::boolean, v.requested_cents,
      v.approved_cents, v.reason, v.source, v.latency_us, v.decided_at
    from ${unnestRows(tx, rows, {
      id: ['text', (r) => r.id],
      event_id: ['text', (r) => r.eventId],
      authorization_id: ['text', (r) => r.authorizationId],
      user_id: ['uuid', (r) => r.userId],
      card_id: ['text', (r) => r.cardId],
      approved: ['text', (r) => String(r.approved)],
      requested_cents: ['bigint', (r) => r.requestedCents.toString()],
      approved_cents: ['bigint', (r) => r.approvedCents.toString()],
      reason: ['text', (r) => r.reason],
      source: ['text', (r) => r.source],
      latency_us: ['integer', (r) => String(r.latencyUs)],
      decided_at: ['timestamptz', (r) => r.decidedAt.toISOString()],
    })}
    order by v.n
    on conflict do nothing returning event_id`;
  return new Set(inserted.map((row) => row.event_id));
}

/** Redis's decision for an event whose row holds the fallback's decision `fallbackId`. */
export interface DecisionReplacement {
  eventId: string;
  fallbackId: string;
  id: string;
  approved: boolean;
  approvedCents: bigint;
  reason: string;
  latencyUs: number;
  decidedAt: Date;
}

/**
 * Replaces the fallback's decision of each event by Redis's (docs/chaos.md, bug 3): only the outcome
 * columns, which migration 0016 lets the ledger writer update; event, authorization, user, card and
 * amount requested stay as the fallback inserted them. A row that no longer holds `fallbackId` is left.
 */
export async function replaceFallbackDecisions(
  tx: Sql | Tx,
  rows: readonly DecisionReplacement[],
): Promise<void> {
  if (rows.length === 0) return;
  await tx`update decisions d set id = v.decision_id, approved = v.approved::boolean, approved_cents = v.approved_cents,
      reason = v.reason, source = 'redis', latency_us = v.latency_us, decided_at = v.decided_at
    from ${unnestRows(tx, rows, {
      event_id: ['text', (r) => r.eventId],
      fallback_id: ['text', (r) => r.fallbackId],
      decision_id: ['text', (r) => r.id],
      approved: ['text', (r) => String(r.approved)],
      approved_cents: ['bigint', (r) => r.approvedCents.toString()],
      reason: ['text', (r) => r.reason],
      latency_us: ['integer', (r) => String(r.latencyUs)],
      decided_at: ['timestamptz', (r) => r.decidedAt.toISOString()],
    })}
    where d.event_id = v.event_id and d.id = v.fallback_id`;
}
