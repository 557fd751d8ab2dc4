/**
 * One step of the indexer, following the head: backfill when the cursor is deeper than reorgDepthMax
 * (after checking the cursor itself was not orphaned), one tail range when it is within reach of the
 * head, a reorg when the cursor's block is no longer canonical (or above the head), idle at the head.
 */

import type { BlockRef } from '../store/index.ts';
import type { Sync } from '../sync/index.ts';
import type { BlocksBatch } from './commit.ts';
import type { IndexerMetrics } from './metrics.ts';
import { cursorOf, type RuntimeState, type StepResult } from './state.ts';

export interface HeadFollowOptions {
  sync: Sync;
  reorgDepthMax: number;
  metrics: IndexerMetrics;
  state: RuntimeState;
  init: () => Promise<void>;
  backfill: (deepEnd: bigint, head: bigint) => Promise<void>;
  rollBack: (tip: BlockRef, head: bigint) => Promise<StepResult>;
  commitBlocks: (batch: BlocksBatch) => Promise<void>;
}

/** The step of one indexer (see the header). */
export function createStep(options: HeadFollowOptions) {
  const { sync, metrics, state, init, backfill, rollBack, commitBlocks } = options;
  const here = () => cursorOf(state);

  const step = async (): Promise<StepResult> => {
    await init();
    const head = await sync.head();
    metrics.headBlock.set(Number(head));
    const at = here();
    const deepEnd = head - BigInt(options.reorgDepthMax);
    if (at.number < deepEnd) {
      // Before jumping ahead, make sure the cursor itself was not orphaned while we were away.
      if (at.number >= 0n) {
        const current = await sync.header(at.number);
        if (current === null || current.hash !== at.hash) return rollBack(at, head);
      }
      await backfill(deepEnd, head);
      return { kind: 'blocks', cursor: here(), head };
    }
    if (at.number > head) return rollBack(at, head);
    if (at.number === head) {
      const current = await sync.header(head);
      if (current !== null && current.hash === at.hash) return { kind: 'idle', cursor: at, head };
      return rollBack(at, head);
    }
    const batch = await sync.fetchTail(at, at.number + 1n, head, head);
    if (batch === null) return rollBack(at, head);
    await commitBlocks(batch);
    return { kind: 'blocks', cursor: here(), head };
  };

  return step;
}
