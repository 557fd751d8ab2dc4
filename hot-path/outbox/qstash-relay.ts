/**
 * QUEUE_DRIVER=qstash: carries the outbox to the ledger writer through QStash instead of the writer
 * reading Redis directly. The decision still stores its hold and record atomically in the Redis stream
 * (nothing is approved unless stored); this relay then publishes each stream entry with
 * `@upstash/qstash` to the writer's `/qstash` endpoint and acknowledges the entry only after QStash
 * accepted it. QStash's `deduplicationId` (the stream entry id) and the writer's natural keys make a
 * re-publish after a crash harmless.
 *
 * Why a relay rather than publishing inside the request: a publish is an HTTPS call to QStash, which
 * must not sit inside Stripe's 2-second window, and a publish that fails after the hold was reserved
 * would otherwise lose the record.
 */
import type { Client } from '@upstash/qstash';
import type { Redis } from '../../shared/redis/client.ts';
import { allOutboxKeys } from '../../shared/redis/keys.ts';

export const RELAY_GROUP = 'qstash-relay';

/** The body published for one stream entry; the receiver rebuilds the entry from it. */
export interface RelayedEntry {
  stream: string;
  id: string;
  fields: Record<string, string>;
}

export interface QStashRelayOptions {
  redis: Redis;
  client: Pick<Client, 'publishJSON'>;
  prefix: string;
  /** The ledger writer's public `/qstash` URL. */
  destinationUrl: string;
  consumer: string;
  batchMax: number;
  blockMs: number;
  onError?: (error: unknown) => void;
}

/** XREADGROUP's reply as [stream, entries] pairs, whether the client returned pairs or a flat list (RESP3 maps). */
function streamPairs(reply: unknown[] | null): [string, [string, string[]][]][] {
  if (reply === null) return [];
  if (typeof reply[0] === 'string') {
    const out: [string, [string, string[]][]][] = [];
    for (let i = 0; i + 1 < reply.length; i += 2)
      out.push([reply[i] as string, reply[i + 1] as [string, string[]][]]);
    return out;
  }
  return reply as [string, [string, string[]][]][];
}

function pairs(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  return fields;
}

export function createQStashRelay(options: QStashRelayOptions) {
  const { redis, client, prefix } = options;
  const streams = allOutboxKeys(prefix);
  let running = false;
  let loop: Promise<void> | null = null;
  let published = 0;

  async function ensureGroups(): Promise<void> {
    for (const stream of streams) {
      try {
        await redis.xgroup('CREATE', stream, RELAY_GROUP, '0', 'MKSTREAM');
      } catch (error) {
        if (!String(error).includes('BUSYGROUP')) throw error;
      }
    }
  }

  /** Publishes and acknowledges one round of entries (own pending first, then new). Returns how many. */
  async function relayOnce(): Promise<number> {
    let count = 0;
    for (const cursor of ['0', '>'] as const) {
      const reply = (await redis.call(
        'XREADGROUP',
        'GROUP',
        RELAY_GROUP,
        options.consumer,
        'COUNT',
        String(options.batchMax),
        ...(cursor === '>' ? ['BLOCK', String(options.blockMs)] : []),
        'STREAMS',
        ...streams,
        ...streams.map(() => cursor),
      )) as unknown[] | null;
      for (const [stream, entries] of streamPairs(reply)) {
        for (const [id, flat] of entries) {
          const body: RelayedEntry = { stream, id, fields: pairs(flat) };
          await client.publishJSON({ url: options.destinationUrl, body, deduplicationId: `${stream}-${id}` });
          // Acknowledged only after QStash accepted it; the stream keeps only what is still to send.
          await redis.multi().xack(stream, RELAY_GROUP, id).xdel(stream, id).exec();
          published++;
          count++;
        }
      }
    }
    return count;
  }

  return {
    relayOnce,
    get published() {
      return published;
    },
    async start() {
      await ensureGroups();
      running = true;
      loop = (async () => {
        while (running) {
          try {
            await relayOnce();
          } catch (error) {
            options.onError?.(error);
            await new Promise((resolve) => setTimeout(resolve, 500));
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
