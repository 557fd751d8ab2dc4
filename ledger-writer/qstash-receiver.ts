/**
 * The ledger writer's QStash endpoint (QUEUE_DRIVER=qstash): `POST /qstash` reads the body with a
 * bound (outboxLimits.qstashBodyBytesMax), verifies the `Upstash-Signature` JWT with the library's Receiver
 * (current and next signing keys, so a key roll never drops a message), then applies the relayed
 * outbox entry with the stream consumer's code (`parseEntry` + `applyBatch`), in stream order per shard.
 *
 * Order and exactly once (see shared/outbox/watermark.ts): the relay sends each entry with `prev`,
 * its predecessor in the stream. An entry is applied only when its shard's applied watermark has
 * reached `prev`; after COMMIT the watermark moves to the entry, and only then may the relay delete it.
 * An entry at or below the watermark is a duplicate (QStash delivers at least once, the relay
 * re-publishes): answered 200, nothing done. The effects are idempotent by natural keys as well, so a
 * watermark that lags (a crash between COMMIT and the advance) costs a harmless re-apply.
 *
 * Answers:
 * - 200 applied, duplicate, or dead-lettered (an entry that can never apply is copied with its error to
 *   the dead-letter stream, as the stream writer does, and the shard moves on past it; a `dropped` stub
 *   stands for an entry the relay could not send and dead-lettered itself);
 * - 409 `predecessor_pending`: arrived before its predecessor was applied; QStash retries it later;
 * - 413 `body_too_large` (unread, nothing recorded); 401 unsigned or bad signature; 400 a body that is
 *   not a relayed entry (our relay never sends one);
 * - 500 `not_applied`: Postgres or Redis unavailable, or a data error not yet tried
 *   limits.poisonAttemptsMax times; QStash retries.
 */
import type { Receiver } from '@upstash/qstash';
import { Hono } from 'hono';
import { z } from 'zod';
import type { Sql } from '../shared/db/client.ts';
import { classifyRedisCallError } from '../shared/errors.ts';
import { readRawBody, requestHeader } from '../shared/http/raw-body.ts';
import { appendDeadLetter } from '../shared/outbox/dead-letters.ts';
import { outboxLimits } from '../shared/outbox/limits.ts';
import type { RawEntry, RelayedEntry } from '../shared/outbox/records.ts';
import { advanceWatermark, compareStreamIds, readWatermark } from '../shared/outbox/watermark.ts';
import type { Redis } from '../shared/redis/client.ts';
import { allOutboxKeys } from '../shared/redis/keys.ts';
import { limits } from './limits.ts';
import { type ApplyOptions, applyBatch, parseEntry } from './write-batch.ts';
import { isRetryable } from './writer.ts';

const streamId = z.string().regex(/^\d{1,20}-\d{1,20}$/);

export interface QStashReceiverDeps {
  receiver: Pick<Receiver, 'verify'>;
  sql: Sql;
  /** Holds the applied watermarks (next to the outbox streams) and the dead-letter stream. */
  redis: Redis;
  prefix: string;
  /** The public URL QStash calls; the signature's subject must equal it. */
  publicUrl: string;
  apply: ApplyOptions;
  /** Defaults to outboxLimits.qstashBodyBytesMax. */
  bodyLimitBytes?: number;
}

function errorText(error: unknown): string {
  const e = error as { code?: unknown; message?: unknown };
  const text = `${typeof e?.code === 'string' ? `${e.code}: ` : ''}${typeof e?.message === 'string' ? e.message : String(error)}`;
  return text.slice(0, outboxLimits.deadLetterErrorCharsMax);
}

export function createQStashReceiverApp(deps: QStashReceiverDeps) {
  const { redis, prefix } = deps;
  const bodyLimitBytes = deps.bodyLimitBytes ?? outboxLimits.qstashBodyBytesMax;
  const streams = new Set(allOutboxKeys(prefix));
  const relayedEntry = z.object({
    stream: z.string().refine((s) => streams.has(s), 'not an outbox stream'),
    id: streamId,
    prev: streamId.nullable(),
    fields: z.record(z.string(), z.string()),
    dropped: z.literal('too_large').optional(),
  }) satisfies z.ZodType<RelayedEntry>;

  /** Counts a failed apply of the entry; true once it has failed limits.poisonAttemptsMax times. */
  async function poisoned(raw: RawEntry): Promise<boolean> {
    const key = `${raw.stream}:failed:${raw.id}`;
    const [[, attempts] = []] =
      (await redis.multi().incr(key).expire(key, limits.qstashPoisonAttemptsTtlS).exec()) ?? [];
    return Number(attempts) >= limits.poisonAttemptsMax;
  }

  const app = new Hono();
  app.post('/qstash', async (c) => {
    const read = await readRawBody(c, bodyLimitBytes);
    if (!read.ok) {
      // Refused unread: close the connection rather than draining the rest.
      c.header('Connection', 'close');
      return c.json({ error: 'body_too_large' }, 413);
    }
    const body = read.text;
    const signature = requestHeader(c, 'upstash-signature');
    if (signature === undefined) return c.json({ error: 'missing_signature' }, 401);
    try {
      await deps.receiver.verify({ signature, body, url: deps.publicUrl });
    } catch {
      // Receiver.verify throws for every signature it does not accept (malformed, wrong key, expired,
      // another URL or body): each is a bad signature; it calls nothing that could be down.
      return c.json({ error: 'bad_signature' }, 401);
    }
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      // JSON.parse of a string throws only SyntaxError: the body is not JSON.
      return c.json({ error: 'malformed_json' }, 400);
    }
    const relayed = relayedEntry.safeParse(json);
    if (!relayed.success) return c.json({ error: 'malformed_entry' }, 400);
    const { stream, id, prev, fields, dropped } = relayed.data;
    const raw: RawEntry = { stream, id, fields };
    try {
      const mark = await readWatermark(redis, stream);
      if (mark !== null && compareStreamIds(id, mark) <= 0) return c.json({ applied: 0, duplicate: true });
      if (prev !== null && (mark === null || compareStreamIds(mark, prev) < 0))
        return c.json({ error: 'predecessor_pending' }, 409);
      // The next entry of its shard.
      if (dropped !== undefined) {
        // Too large to send: the relay dead-lettered it; the shard moves on past it.
        await advanceWatermark(redis, stream, id);
        return c.json({ applied: 0, deadLettered: true });
      }
      const parsed = parseEntry(raw);
      if (!parsed.ok) {
        await appendDeadLetter(redis, prefix, raw, parsed.error, 'invalid');
        await advanceWatermark(redis, stream, id);
        return c.json({ applied: 0, deadLettered: true });
      }
      let applied: number;
      try {
        applied = (await applyBatch(deps.sql, [parsed.entry], deps.apply)).applied;
      } catch (error) {
        // Not applied. Postgres unavailable (or the deployment's fault) is retried by QStash as it is;
        // any other failure is the entry's until it has failed limits.poisonAttemptsMax times, then
        // dead-lettered like the stream writer's poison entries (writer.ts isolate).
        if (isRetryable(error) || !(await poisoned(raw))) return c.json({ error: 'not_applied' }, 500);
        await appendDeadLetter(redis, prefix, raw, errorText(error), 'failed');
        await advanceWatermark(redis, stream, id);
        return c.json({ applied: 0, deadLettered: true });
      }
      // Committed: only now may the shard move past it (and the relay delete it).
      await advanceWatermark(redis, stream, id);
      return c.json({ applied, duplicate: applied === 0 });
    } catch (error) {
      // Redis (the watermark, the dead letters, the poison count) unavailable: QStash retries; the
      // watermark has not moved, so the retry is applied in order, and the natural keys make it safe.
      // Anything else is a bug: the app's onError logs it and answers a bare 500 (QStash retries too).
      if (!classifyRedisCallError(error).retryable) throw error;
      return c.json({ error: 'not_applied' }, 500);
    }
  });
  return app;
}
