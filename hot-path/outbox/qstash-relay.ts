/**
 * QUEUE_DRIVER=qstash: carries the outbox to the ledger writer through QStash instead of the writer
 * reading Redis directly. The decision still stores its hold and record atomically in the Redis stream
 * (nothing is approved unless stored); this relay then publishes each stream entry with
 * `@upstash/qstash` to the writer's `/qstash` endpoint.
 *
 * It keeps the stream writer's two promises although QStash delivers at least once and in no
 * particular order:
 * - An entry is acknowledged (XACK + XDEL) only once its effects are committed: not when QStash
 *   accepts the publish, but when its shard's applied watermark (watermark.ts), which the receiver
 *   advances after COMMIT, has passed it. Until then it stays in the stream, pending for the relay.
 * - Order per shard: each entry is published with `prev`, the id of the entry before it in its stream
 *   when it was read (null when none is left, i.e. all earlier ones are applied and deleted). The
 *   receiver applies an entry only when the watermark has reached `prev` and answers 409 otherwise, so
 *   QStash retries it later; at or below the watermark it is a duplicate and changes nothing.
 *
 * An entry too large to send (over the receiver's body limit, or refused by QStash) is copied to the
 * dead-letter stream and replaced by a stub that moves its shard past it (RelayedEntry.dropped).
 *
 * What happens when a step fails:
 * - publish fails: the entry stays in memory and is published again in the next round (same
 *   deduplication id, so a publish that did reach QStash is dropped there as a duplicate);
 * - QStash gives up on a delivery (its retries spent while the predecessor was late, the writer down)
 *   or the relay dies after reading: the entry stays pending; after limits.republishIdleMs any relay
 *   claims it (XCLAIM) and publishes it again under a new deduplication id (`…-r<deliveries>`: QStash
 *   keeps deduplication ids for days, the same id would be dropped);
 * - the receiver dies after COMMIT, before advancing the watermark: the entry is delivered or
 *   re-published again, applied again as a duplicate (natural keys), and the watermark then moves.
 *
 * Why a relay rather than publishing inside the request: a publish is an HTTPS call to QStash, which
 * must not sit inside Stripe's 2-second window, and a publish that fails after the hold was reserved
 * would otherwise lose the record.
 */
import type { Client } from '@upstash/qstash';
import { replyCode } from '../../shared/errors.ts';
import { appendDeadLetter } from '../../shared/outbox/dead-letters.ts';
import { outboxLimits } from '../../shared/outbox/limits.ts';
import type { RelayedEntry } from '../../shared/outbox/records.ts';
import { ackApplied, compareStreamIds, readWatermark } from '../../shared/outbox/watermark.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { allOutboxKeys } from '../../shared/redis/keys.ts';
import { readGroupAcross } from '../../shared/redis/streams.ts';
import { limits } from './limits.ts';

export const RELAY_GROUP = 'qstash-relay';

export interface QStashRelayOptions {
  redis: Redis;
  client: Pick<Client, 'publishJSON'>;
  prefix: string;
  /** The ledger writer's public `/qstash` URL. */
  destinationUrl: string;
  consumer: string;
  batchMax: number;
  blockMs: number;
  /** Defaults to limits.republishIdleMs. */
  republishIdleMs?: number;
  onError?: (error: unknown) => void;
}

interface ReadEntry {
  stream: string;
  id: string;
  fields: Record<string, string>;
  /** Deliveries so far (1 for a first read); part of the deduplication id of a re-publish. */
  deliveries: number;
  /**
   * The entry before this one in its stream, when known from the read itself (the entries one
   * XREADGROUP returns for a stream are consecutive); otherwise looked up when published.
   */
  prev?: string | undefined;
}

/** XREADGROUP's reply as [stream, entries] pairs, whether the client returned pairs or a flat list (RESP3 maps). */
function streamPairs(reply: unknown[] | null): [string, [string, string[] | null][]][] {
  if (reply === null) return [];
  if (typeof reply[0] === 'string') {
    const out: [string, [string, string[] | null][]][] = [];
    for (let i = 0; i + 1 < reply.length; i += 2)
      out.push([reply[i] as string, reply[i + 1] as [string, string[] | null][]]);
    return out;
  }
  return reply as [string, [string, string[] | null][]][];
}

function pairs(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  return fields;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function createQStashRelay(options: QStashRelayOptions) {
  const { redis, prefix } = options;
  const streams = allOutboxKeys(prefix);
  const republishIdleMs = options.republishIdleMs ?? limits.republishIdleMs;
  const scanIntervalMs = Math.min(limits.republishScanIntervalMs, republishIdleMs / 2);
  let running = false;
  let loop: Promise<void> | null = null;
  let published = 0;
  let lastAckMs = 0;
  let lastScanMs = 0;
  /** Read (pending for this consumer) but not yet accepted by QStash, in stream order. */
  let unpublished: ReadEntry[] = [];

  /**
   * Publishes entries in order, each with its predecessor (known from the read, or looked up: the
   * greatest id still in the stream below it — an entry between them that is gone was applied). On a
   * failure the rest stay in `unpublished` for the next round.
   */
  async function publish(entries: ReadEntry[]): Promise<number> {
    let count = 0;
    try {
      for (const entry of entries) {
        await publishEntry(options, entry);
        // Not acknowledged here: only the receiver's watermark, after COMMIT, lets ackOnce delete it.
        published++;
        count++;
      }
      unpublished = [];
    } catch (error) {
      unpublished = entries.slice(count);
      throw error;
    }
    return count;
  }

  const ackOnce = () => ackAppliedEntries(redis, streams);

  /**
   * One round: acknowledge what was applied, publish what a failed round left, re-publish what is
   * overdue, then read and publish new entries. Returns how many were published.
   */
  async function relayOnce(): Promise<number> {
    const now = Date.now();
    if (now - lastAckMs >= limits.ackIntervalMs) {
      lastAckMs = now;
      await ackOnce();
    }
    let count = await publish(unpublished);
    if (now - lastScanMs >= scanIntervalMs) {
      lastScanMs = now;
      count += await publish(await claimOverdue(redis, streams, options.consumer, republishIdleMs));
    }
    count += await publish(await readNew(redis, streams, options));
    return count;
  }

  return {
    relayOnce,
    ackOnce,
    get published() {
      return published;
    },
    async start() {
      await ensureGroups(redis, streams);
      running = true;
      loop = (async () => {
        while (running) {
          try {
            await relayOnce();
          } catch (error) {
            options.onError?.(error);
            await sleep(limits.errorBackoffMs);
            // Redis restarted empty: the streams and their group are gone; make them again.
            if (replyCode(error) === 'NOGROUP') await ensureGroups(redis, streams).catch(() => undefined);
          }
        }
      })();
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

/** Creates the relay's consumer group on every outbox stream (and the stream), if not there yet. */
async function ensureGroups(redis: Redis, streams: readonly string[]): Promise<void> {
  for (const stream of streams) {
    try {
      await redis.xgroup('CREATE', stream, RELAY_GROUP, '0', 'MKSTREAM');
    } catch (error) {
      if (replyCode(error) !== 'BUSYGROUP') throw error;
    }
  }
}

/** The entry before `id` still in `stream`, or null (all earlier entries are applied and deleted). */
async function predecessor(redis: Redis, stream: string, id: string): Promise<string | null> {
  const [before] = (await redis.xrevrange(stream, `(${id}`, '-', 'COUNT', 1)) as [string, string[]][];
  return before?.[0] ?? null;
}

/**
 * Publishes one entry with its predecessor; one too large to send is dead-lettered and replaced by a
 * stub that moves its shard past it.
 */
async function publishEntry(options: QStashRelayOptions, entry: ReadEntry): Promise<void> {
  const { redis, client, prefix } = options;
  const prev = entry.prev ?? (await predecessor(redis, entry.stream, entry.id));
  const body: RelayedEntry = { stream: entry.stream, id: entry.id, prev, fields: entry.fields };
  const deduplicationId =
    entry.deliveries <= 1
      ? `${entry.stream}-${entry.id}`
      : `${entry.stream}-${entry.id}-r${entry.deliveries}`;
  const send = (payload: RelayedEntry, dedup: string) =>
    client.publishJSON({
      url: options.destinationUrl,
      body: payload,
      deduplicationId: dedup,
      retryDelay: limits.retryDelayExpression,
    });
  let tooLarge = Buffer.byteLength(JSON.stringify(body)) > outboxLimits.qstashBodyBytesMax;
  if (!tooLarge) {
    try {
      await send(body, deduplicationId);
    } catch (error) {
      // QStash's own message size limit depends on the plan.
      if ((error as { status?: unknown }).status !== 413) throw error;
      tooLarge = true;
    }
  }
  if (tooLarge) {
    await deadLetterTooLarge(redis, prefix, entry);
    await send(
      { stream: entry.stream, id: entry.id, prev, fields: {}, dropped: 'too_large' },
      `${deduplicationId}-dropped`,
    );
  }
}

/**
 * Copies an entry too large to send to the dead-letter stream (the stream writer's format), its user
 * marked: Postgres never gets its money, so no rebuild may raise the user's credit from Postgres.
 */
function deadLetterTooLarge(redis: Redis, prefix: string, entry: ReadEntry): Promise<void> {
  return appendDeadLetter(
    redis,
    prefix,
    { stream: entry.stream, id: entry.id, fields: entry.fields },
    `relayed body over ${outboxLimits.qstashBodyBytesMax} bytes or refused by QStash as too large`,
    'too_large',
  );
}

/** Acknowledges and deletes, per stream, the entries at or below its applied watermark. */
async function ackAppliedEntries(redis: Redis, streams: readonly string[]): Promise<number> {
  let count = 0;
  for (const stream of streams) {
    for (;;) {
      const n = await ackApplied(redis, stream, RELAY_GROUP, limits.ackBatchMax);
      count += n;
      if (n < limits.ackBatchMax) break;
    }
  }
  return count;
}

/** Entries pending longer than republishIdleMs (and not yet applied): claimed by this relay. */
async function claimOverdue(
  redis: Redis,
  streams: readonly string[],
  consumer: string,
  republishIdleMs: number,
): Promise<ReadEntry[]> {
  const out: ReadEntry[] = [];
  for (const stream of streams) {
    const pending = (await redis.call(
      'XPENDING',
      stream,
      RELAY_GROUP,
      'IDLE',
      String(republishIdleMs),
      '-',
      '+',
      String(limits.republishScanMax),
    )) as [string, string, number, number][];
    // Entries the watermark has passed are applied: ackOnce deletes them, nothing to publish.
    const mark = await readWatermark(redis, stream);
    const overdue = pending.filter(([id]) => mark === null || compareStreamIds(id, mark) > 0);
    if (overdue.length === 0) continue;
    const deliveries = new Map(overdue.map(([id, , , n]) => [id, Number(n)]));
    // XCLAIM re-checks the idle time, so two relays never both take one entry; deleted ones come back null.
    const claimed = (await redis.call(
      'XCLAIM',
      stream,
      RELAY_GROUP,
      consumer,
      String(republishIdleMs),
      ...overdue.map(([id]) => id),
    )) as ([string, string[] | null] | null)[];
    // Not consecutive (entries still in flight elsewhere are skipped): each predecessor is looked up.
    for (const item of claimed) {
      if (item === null) continue;
      const [id, flat] = item;
      if (flat === null) continue;
      out.push({ stream, id, fields: pairs(flat), deliveries: (deliveries.get(id) ?? 1) + 1 });
    }
  }
  return out;
}

/** Entries never delivered to this group yet, each with its predecessor when the read shows it. */
async function readNew(
  redis: Redis,
  streams: readonly string[],
  options: QStashRelayOptions,
): Promise<ReadEntry[]> {
  // One XREADGROUP over every shard on one Redis; one per shard on a cluster (shared/redis/streams.ts).
  const reply = await readGroupAcross(redis, {
    group: RELAY_GROUP,
    consumer: options.consumer,
    streams,
    id: '>',
    count: options.batchMax,
    blockMs: options.blockMs,
  });
  const out: ReadEntry[] = [];
  for (const [stream, entries] of streamPairs(reply)) {
    let prev: string | undefined;
    for (const [id, flat] of entries) {
      if (flat !== null) out.push({ stream, id, fields: pairs(flat), deliveries: 1, prev });
      prev = id;
    }
  }
  return out;
}
