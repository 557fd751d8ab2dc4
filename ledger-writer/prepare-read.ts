/**
 * Validation of a read before it is written: entries already deleted from their stream are acked,
 * invalid ones dead-lettered, the rest parsed and put oldest first.
 */

import type { DeadLetterProblem } from '../shared/outbox/dead-letters.ts';
import type { RawEntry } from '../shared/outbox/records.ts';
import type { RawByKey } from './batch-write.ts';
import type { Prepared } from './lanes.ts';
import type { Read } from './stream-read.ts';
import { streamIdMs } from './stream-read.ts';
import { type ParsedEntry, parseEntry } from './write-batch.ts';

export interface PrepareReadOptions {
  /** ack.ts */
  ack: (entries: readonly { stream: string; id: string }[]) => Promise<void>;
  /** ack.ts */
  deadLetterEntry: (raw: RawEntry, error: string, problem: DeadLetterProblem) => Promise<void>;
}

/**
 * Validates a read: entries already deleted from their stream are acked (written before, only the
 * ack was lost), invalid ones dead-lettered; the rest come back oldest first, with their raw fields
 * (kept to dead-letter a poison entry as it was read).
 */
export async function prepareRead(
  { entries, epochs }: Read,
  { ack, deadLetterEntry }: PrepareReadOptions,
): Promise<Prepared> {
  const deleted: { stream: string; id: string }[] = [];
  const valid: ParsedEntry[] = [];
  const raws: RawByKey = new Map();
  for (const item of entries) {
    if (item.fields === null) {
      deleted.push(item);
      continue;
    }
    const raw: RawEntry = { stream: item.stream, id: item.id, fields: item.fields };
    const parsed = parseEntry(raw);
    if (!parsed.ok) {
      await deadLetterEntry(raw, parsed.error, 'invalid');
      continue;
    }
    raws.set(`${raw.stream} ${raw.id}`, raw);
    valid.push(parsed.entry);
  }
  await ack(deleted);
  // Stream order across shards: by id time, so one batch is roughly oldest first. The sort is stable,
  // so each stream's entries keep their order.
  valid.sort((a, b) => streamIdMs(a.id) - streamIdMs(b.id));
  return { read: entries.length, valid, raws, epochs };
}
