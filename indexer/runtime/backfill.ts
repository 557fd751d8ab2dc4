/**
 * The indexer's backfill: the ranges deeper than reorgDepthMax below the head, which no reorg can touch,
 * fetched up to `prefetch` ranges ahead (their records prepared on arrival) while the current one
 * commits, in order.
 */
import { prepareRecords } from '../apply/index.ts';
import type { EventRecord } from '../store/index.ts';
import type { Sync, SyncBatch } from '../sync/index.ts';
import type { BlocksBatch } from './commit.ts';
import { cursorOf, type RuntimeState } from './state.ts';

export interface BackfillOptions {
  sync: Sync;
  chainId: number;
  /** Ranges fetched ahead of the one committing. */
  prefetch: number;
  state: RuntimeState;
  commitBlocks: (batch: BlocksBatch) => Promise<void>;
}

/** The backfill of one indexer: `backfill(deepEnd, head)` commits every range up to deepEnd. */
export function createBackfill(options: BackfillOptions) {
  const { sync, chainId, prefetch, state, commitBlocks } = options;
  const here = () => cursorOf(state);

  /** Deep ranges, fetched `prefetch` ahead while the current one commits. */
  const backfill = async (deepEnd: bigint, head: bigint) => {
    let next = here().number + 1n;
    const queue: Promise<Extract<SyncBatch, { kind: 'blocks' }> & { records: EventRecord[] }>[] = [];
    const issue = () => {
      if (next > deepEnd) return;
      const span = BigInt(sync.blockRange);
      const to = next + span - 1n < deepEnd ? next + span - 1n : deepEnd;
      // Records are prepared as soon as the range arrives, while the previous one is committing.
      const fetching = sync
        .fetchDeep(next, to, head)
        .then((batch) => ({ ...batch, records: prepareRecords(chainId, batch.logs) }));
      // A prefetched range that fails is reported when awaited; never as an unhandled rejection.
      fetching.catch(() => {});
      queue.push(fetching);
      next = to + 1n;
    };
    while (queue.length <= prefetch && next <= deepEnd) issue();
    while (queue.length > 0 && !state.stopping) {
      const batch = await (queue.shift() as (typeof queue)[number]);
      issue();
      await commitBlocks(batch);
    }
  };

  return backfill;
}
