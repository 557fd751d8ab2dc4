/**
 * The indexer's reorg handling: from a tip that is no longer canonical, find the common ancestor among
 * the blocks Postgres remembers (at most reorgDepthMax back), undo everything above it in one
 * transaction, and move the cursor there.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { type ApplyContext, commitReorg, newTouched, type Touched } from '../apply/index.ts';
import { type BlockRef, recentBlocks } from '../store/index.ts';
import type { Sync } from '../sync/index.ts';
import type { IndexerMetrics } from './metrics.ts';
import { contextOf, type RuntimeState, type StepResult } from './state.ts';

export interface RollBackOptions {
  sql: postgres.Sql;
  sync: Sync;
  chainId: number;
  reorgDepthMax: number;
  logger: Logger;
  metrics: IndexerMetrics;
  state: RuntimeState;
  afterCommit: (touched: Touched) => void;
}

/** Rolls the indexer back to the common ancestor of `tip` and the chain whose head is `head`. */
export function createRollBack(options: RollBackOptions) {
  const { sql, sync, chainId, logger, metrics, state, afterCommit } = options;
  const context = (): ApplyContext => contextOf(state);

  const rollBack = async (tip: BlockRef, head: bigint): Promise<StepResult> => {
    const remembered = await recentBlocks(sql, chainId, tip.number - BigInt(options.reorgDepthMax));
    const reorg = await sync.findAncestor(tip, remembered, head);
    const touched = newTouched();
    let orphaned = 0;
    await sql.begin(async (tx) => {
      orphaned = await commitReorg(tx, context(), reorg, touched);
    });
    state.cursor = reorg.ancestor;
    metrics.reorgs.observe(reorg.depth);
    logger.warn(
      {
        depth: reorg.depth,
        ancestor: reorg.ancestor.number.toString(),
        orphanedEvents: orphaned,
        undone: touched.undone,
      },
      'reorg: rolled back to the common ancestor',
    );
    afterCommit(touched);
    return { kind: 'reorg', cursor: reorg.ancestor, head };
  };

  return rollBack;
}
