/**
 * The ledger writer's QStash endpoint (QUEUE_DRIVER=qstash): `POST /qstash` verifies the
 * `Upstash-Signature` JWT with the library's Receiver (current and next signing keys, so a key roll
 * never drops a message), then applies the relayed outbox entry exactly like the stream consumer does
 * (`parseEntry` + `applyBatch`, idempotent by natural keys). Answers: 200 applied or already applied;
 * 401 bad signature; 400 an entry that can never apply (QStash then keeps it in its DLQ); 500 a
 * retryable failure (Postgres down), which QStash retries.
 */
import type { Receiver } from '@upstash/qstash';
import { Hono } from 'hono';
import { z } from 'zod';
import type { Sql } from '../../shared/db/client.ts';
import { type ApplyOptions, applyBatch, parseEntry } from './apply.ts';

const relayedEntry = z.object({
  stream: z.string().min(1).max(256),
  id: z.string().regex(/^\d{1,20}-\d{1,20}$/),
  fields: z.record(z.string().max(64), z.string().max(1_100_000)),
});

export interface QStashReceiverDeps {
  receiver: Pick<Receiver, 'verify'>;
  sql: Sql;
  /** The public URL QStash calls; the signature's subject must equal it. */
  publicUrl: string;
  apply: ApplyOptions;
  bodyLimitBytes: number;
}

export function createQStashReceiverApp(deps: QStashReceiverDeps) {
  const app = new Hono();
  app.post('/qstash', async (c) => {
    const body = await c.req.text();
    if (body.length > deps.bodyLimitBytes) return c.json({ error: 'body_too_large' }, 413);
    const signature = c.req.header('upstash-signature');
    if (signature === undefined) return c.json({ error: 'missing_signature' }, 401);
    try {
      await deps.receiver.verify({ signature, body, url: deps.publicUrl });
    } catch {
      return c.json({ error: 'bad_signature' }, 401);
    }
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      return c.json({ error: 'malformed_json' }, 400);
    }
    const relayed = relayedEntry.safeParse(json);
    if (!relayed.success) return c.json({ error: 'malformed_entry' }, 400);
    const parsed = parseEntry(relayed.data);
    if (!parsed.ok) return c.json({ error: 'invalid_record', detail: parsed.error }, 400);
    try {
      const result = await applyBatch(deps.sql, [parsed.entry], deps.apply);
      return c.json({ applied: result.applied, duplicate: result.duplicates > 0 });
    } catch {
      // Retryable from QStash's side (e.g. Postgres down); the natural keys make the retry safe.
      return c.json({ error: 'not_applied' }, 500);
    }
  });
  return app;
}
