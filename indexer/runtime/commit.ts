/**
 * The indexer's commits: one range of blocks in one Postgres transaction with its cursor, then its
 * metrics and alerts, and the touched users written through to Redis behind it, in commit order.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { type ApplyContext, commitRange, newTouched, type RangeInput, type Touched } from '../apply/index.ts';
import type { CacheWriter } from '../apply/redis.ts';
import type { EventRecord } from '../store/index.ts';
import type { SyncBatch } from '../sync/index.ts';
import type { IndexerMetrics } from './metrics.ts';
import { contextOf, cursorOf, type RuntimeState } from './state.ts';

export type BlocksBatch = Extract<SyncBatch, { kind: 'blocks' }> & { records?: EventRecord[] };

export interface CommitterOptions {
  sql: postgres.Sql;
  logger: Logger;
  metrics: IndexerMetrics;
  cache: CacheWriter;
  state: RuntimeState;
  /** See IndexerOptions.beforeCommit. */
  beforeCommit?: ((range: { from: bigint; to: bigint; events: number }) => void | Promise<void>) | undefined;
}

export type Committer = ReturnType<typeof createCommitter>;

/** The commits of one indexer (see the header). */
export function createCommitter(options: CommitterOptions) {
  const { sql, logger, metrics, cache, state } = options;
  const context = (): ApplyContext => contextOf(state);
  const here = () => cursorOf(state);

  // Redis writes run in commit order, one after another, but concurrently with the next range's
  // commit: each reads the state Postgres holds when it runs, which is never older than its commit.
  let cacheQueue: Promise<void> = Promise.resolve();
  const afterCommit = (touched: Touched) => {
    metrics.eventsStored.inc(touched.stored);
    metrics.eventsApplied.inc(touched.applied);
    metrics.eventsUndone.inc(touched.undone);
    for (const round of touched.heldRounds) {
      metrics.oracleRoundsHeld.inc({ asset: round.assetId, reason: round.verdict });
      logger.error(
        {
          asset: round.assetId,
          reason: round.verdict,
          roundId: round.roundId.toString(),
          answer: round.answer.toString(),
          updatedAtS: round.updatedAtS.toString(),
          block: round.blockNumber.toString(),
          blockHash: round.blockHash,
        },
        `ALERT oracle round held back (${round.verdict}): it does not raise credit`,
      );
    }
    metrics.cursorBlock.set(Number(here().number));
    cacheQueue = cacheQueue
      .then(() => cache.write(touched))
      .catch((error: unknown) => {
        logger.error({ err: error }, 'cache write-through failed; the touched users will be rebuilt');
        cache.markDirty(touched.users, error);
      });
  };
  /** Resolves when every commit so far is in Redis too. */
  const cacheWritten = () => cacheQueue;

  const commitBlocks = async (batch: BlocksBatch) => {
    const touched = newTouched();
    const input: RangeInput = batch;
    await sql.begin(async (tx) => {
      await commitRange(tx, context(), input, touched);
      await options.beforeCommit?.({ from: batch.from, to: batch.to.number, events: batch.logs.length });
    });
    state.cursor = { number: batch.to.number, hash: batch.to.hash };
    afterCommit(touched);
  };

  return { afterCommit, cacheWritten, commitBlocks };
}
