/**
 * `card_events`: the raw Stripe events, partitioned by `created_at` and keyed by `(id, created_at)`,
 * their personal data redacted by a trigger on the way in (drizzle/0014). Written by the ledger writer
 * (every outbox entry's event, in batches) and by the hot path's Postgres fallback (the request event
 * beside its decision). The hot path may read back only `id` and `payload` (drizzle/0017).
 */
import type { Sql, Tx } from '../client.ts';
import { unnestRows } from '../unnest.ts';

export interface CardEventRow {
  id: string;
  type: string;
  userId: string | null;
  objectId: string | null;
  /** The event's JSON text, as received: Postgres parses it once, straight into jsonb. */
  payload: string;
  createdAt: Date;
}

/**
 * Inserts the events that are new, in one statement, in the order given. Returns the ids inserted.
 *
 * The payloads travel as one JSON array of their own text, joined as is (no escaping into an array
 * literal, no parse here): Postgres parses each once, straight into jsonb. Typed text in the SQL:
 * postgres.js would JSON-encode a parameter the server describes as jsonb (a string scalar). Each
 * payload must be one JSON value (a verified request body, or an event the outbox checked): a payload
 * that is not JSON fails the statement with a data error (22P02).
 */
export async function insertCardEvents(tx: Sql | Tx, rows: readonly CardEventRow[]): Promise<Set<string>> {
  if (rows.length === 0) return new Set();
  const payloads = `[${rows.map((r) => r.payload).join(',')}]`;
  const inserted = await tx<{ id: string }[]>`
    insert into card_events (id, type, user_id, object_id, payload, created_at)
    select v.id, v.type, v.user_id, v.object_id, p.payload, v.created_at
    from ${unnestRows(tx, rows, {
      id: ['text', (r) => r.id],
      type: ['text', (r) => r.type],
      user_id: ['uuid', (r) => r.userId],
      object_id: ['text', (r) => r.objectId],
      created_at: ['timestamptz', (r) => r.createdAt.toISOString()],
    })}
    join jsonb_array_elements(${payloads}::text::jsonb) with ordinality as p(payload, n) on p.n = v.n
    order by v.n
    on conflict do nothing returning id`;
  return new Set(inserted.map((row) => row.id));
}
