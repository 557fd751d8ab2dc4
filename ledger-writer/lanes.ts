/**
 * The writer's lanes: a prepared read is split by user into `lanes`, written concurrently, each lane in
 * batches of at most batchMax and in stream order; what committed is acked behind the writes.
 */

import type { RawByKey } from './batch-write.ts';
import { limits } from './limits.ts';
import type { ParsedEntry } from './write-batch.ts';

export interface Prepared {
  /** Entries in the read, valid or not. */
  read: number;
  valid: ParsedEntry[];
  raws: RawByKey;
  /** The fencing epoch of each stream read, as owned when read: every transaction checks it. */
  epochs: Map<string, bigint>;
}

export interface LaneWriterOptions {
  lanes: number;
  batchMax: number;
  /** batch-write.ts: writes one batch; false when it gave up because the writer is stopping. */
  applyWithRetry: (
    batch: ParsedEntry[],
    raws: RawByKey,
    epochs: ReadonlyMap<string, bigint>,
    committed: ParsedEntry[],
  ) => Promise<boolean>;
  /** ack.ts: acks committed entries in the background. */
  ackBehind: (entries: readonly { stream: string; id: string }[]) => Promise<void>;
}

/**
 * The lane of an entry: by user, so every entry that moves one user's money (and every authorization,
 * which belongs to one user) is written by one lane, in order. Entries without a user move no money.
 */
export function laneOf(entry: ParsedEntry, lanes: number): number {
  if (lanes === 1) return 0;
  const record = entry.item.record;
  const key = record.userId ?? record.authorizationId ?? record.eventId;
  let hash = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % lanes;
}

/** Splits entries into `laneCount` lanes by laneOf, keeping their order within each lane. */
export function splitLanes(valid: readonly ParsedEntry[], laneCount: number): ParsedEntry[][] {
  const byLane: ParsedEntry[][] = Array.from({ length: laneCount }, () => []);
  for (const entry of valid) byLane[laneOf(entry, laneCount)]!.push(entry);
  return byLane;
}

/** The lane writer of one writer (see applyPrepared). */
export function createLaneWriter(options: LaneWriterOptions) {
  const { lanes, batchMax, applyWithRetry, ackBehind } = options;

  /**
   * Applies a prepared read in batches of at most batchMax; false when it gave up because stopping.
   * The entries are split into `lanes` by user, and the lanes are written concurrently, each on its own
   * connection and in stream order within it. Two lanes never touch the same credit account or
   * authorization (both belong to one user), and the natural keys differ, so their transactions do not
   * wait on each other until the audit insert, which every transaction makes last: the chain head is
   * taken in one place, after all other locks, so the lanes cannot deadlock and the chain stays one line.
   * Everything before it — the bulk of the work — runs in parallel. (The fence rows are only ever
   * locked `for share` by the lanes, which do not conflict.)
   */
  async function applyPrepared({ valid, raws, epochs }: Prepared): Promise<boolean> {
    // A small read goes in one transaction: split, it would cost two commits for no parallelism gained.
    const laneCount = valid.length < limits.laneSplitEntriesMin ? 1 : lanes;
    const byLane = splitLanes(valid, laneCount);
    const committed: ParsedEntry[] = [];
    const finished = await Promise.all(
      byLane.map(async (lane) => {
        for (let i = 0; i < lane.length; i += batchMax) {
          if (!(await applyWithRetry(lane.slice(i, i + batchMax), raws, epochs, committed))) return false;
        }
        return true;
      }),
    );
    await ackBehind(committed);
    return finished.every(Boolean);
  }

  return { applyPrepared };
}
