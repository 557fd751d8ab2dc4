/**
 * The indexer's loop: read the chain (sync), commit each range or reorg in one Postgres transaction
 * with the cursor (apply + store), then write the touched users through to Redis and publish prices.
 * Backfill pipelines the next ranges' fetches while one range commits.
 *
 * @example
 *   const indexer = createIndexer({ sql, redis, prefix, logger, client, contracts, confirmations: 2, reorgDepthMax: 64 });
 *   await indexer.syncToHead(); // tests
 *   void indexer.run();         // services
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import type { PublicClient } from 'viem';
import type { ContractsFile } from '../../shared/chain/contracts/index.ts';
import { assertChainSettings, assertLimits, LIMITS } from '../../shared/chain/limits.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { createSleeper } from '../../shared/sleeper.ts';
import { type CacheWriter, createCacheWriter } from '../apply/redis.ts';
import type { BlockRef } from '../store/index.ts';
import { createSync, type Sync } from '../sync/index.ts';
import { createBackfill } from './backfill.ts';
import { createCommitter } from './commit.ts';
import { followChain } from './follow.ts';
import { createGuardedStep } from './halt.ts';
import { createStep } from './head-follow.ts';
import { createInit } from './init.ts';
import { createIndexerMetrics, type IndexerMetrics } from './metrics.ts';
import { createRollBack } from './reorg.ts';
import { createRuntimeState, type IndexerStatus, type StepResult } from './state.ts';

// The pieces' own modules: init.ts (assets, cursor), commit.ts (a range's transaction and the cache
// write-through), backfill.ts (deep ranges, prefetched), head-follow.ts (one step at the head),
// reorg.ts (roll back to the common ancestor), halt.ts (the guard that halts), follow.ts (the loop).
export { cursorIdOf, loadApplyContext } from './init.ts';
export { createIndexerMetrics, type IndexerMetrics } from './metrics.ts';
export type { IndexerStatus, StepResult } from './state.ts';

export interface IndexerOptions {
  sql: postgres.Sql;
  redis: Redis;
  prefix: string;
  logger: Logger;
  client: PublicClient;
  contracts: ContractsFile;
  chainId: number;
  confirmations: number;
  reorgDepthMax: number;
  pollIntervalMs?: number;
  blockRangeInitial?: number;
  blockRangeMax?: number;
  tailBlocksPerStepMax?: number;
  prefetchRangesMax?: number;
  metrics?: IndexerMetrics;
  /**
   * Fault injection for crash tests: runs inside each range's transaction after all its writes,
   * before COMMIT (so a crash here is a crash in the middle of a range).
   */
  beforeCommit?: (range: { from: bigint; to: bigint; events: number }) => void | Promise<void>;
}

export interface Indexer {
  readonly status: IndexerStatus;
  readonly cursor: BlockRef | null;
  readonly metrics: IndexerMetrics;
  readonly sync: Sync;
  readonly cache: CacheWriter;
  /** Loads assets, resolves feeds' aggregators and the cursor. Idempotent. */
  init(): Promise<void>;
  /** One step: a backfill run, a tail range, a reorg, or nothing. */
  step(): Promise<StepResult>;
  /** Steps until the cursor is the head (as seen by the last step) and canonical. */
  syncToHead(): Promise<StepResult>;
  /** Follows the chain until stop(); resolves when stopped, rejects when halted or out of retries. */
  run(): Promise<void>;
  stop(): Promise<void>;
}

/** The chain reader of one indexer, with the options' range settings where given. */
function createIndexerSync(options: IndexerOptions): Sync {
  const { client, contracts } = options;
  return createSync({
    client,
    vault: contracts.vault,
    aggregators: contracts.assets.map((a) => a.aggregator),
    reorgDepthMax: options.reorgDepthMax,
    ...(options.blockRangeInitial === undefined ? {} : { blockRangeInitial: options.blockRangeInitial }),
    ...(options.blockRangeMax === undefined ? {} : { blockRangeMax: options.blockRangeMax }),
    ...(options.tailBlocksPerStepMax === undefined
      ? {}
      : { tailBlocksPerStepMax: options.tailBlocksPerStepMax }),
  });
}

export function createIndexer(options: IndexerOptions): Indexer {
  assertLimits();
  assertChainSettings(options);
  const { sql, logger } = options;
  const chainId = options.chainId;
  const metrics = options.metrics ?? createIndexerMetrics();
  const cache = createCacheWriter({ sql, redis: options.redis, prefix: options.prefix, logger });
  const pollIntervalMs = options.pollIntervalMs ?? LIMITS.pollIntervalMs;
  const prefetch = Math.min(options.prefetchRangesMax ?? LIMITS.prefetchRangesMax, LIMITS.prefetchRangesMax);
  const sync = createIndexerSync(options);
  const state = createRuntimeState();
  const { sleep, wake } = createSleeper();
  let running: Promise<void> | null = null;

  const init = createInit({ options, logger, metrics, cache, sync, state });
  const { afterCommit, cacheWritten, commitBlocks } = createCommitter({
    sql,
    logger,
    metrics,
    cache,
    state,
    beforeCommit: options.beforeCommit,
  });
  const rollBack = createRollBack({
    sql,
    sync,
    chainId,
    reorgDepthMax: options.reorgDepthMax,
    logger,
    metrics,
    state,
    afterCommit,
  });
  const backfill = createBackfill({ sync, chainId, prefetch, state, commitBlocks });
  const step = createStep({
    sync,
    reorgDepthMax: options.reorgDepthMax,
    metrics,
    state,
    init,
    backfill,
    rollBack,
    commitBlocks,
  });
  const guarded = createGuardedStep({ sql, chainId, logger, metrics, state, step, cacheWritten });

  return {
    get status() {
      return state.status;
    },
    get cursor() {
      return state.cursor;
    },
    metrics,
    sync,
    cache,
    init,
    step: guarded,
    async syncToHead() {
      for (;;) {
        const result = await guarded();
        if (result.kind === 'idle') return result;
      }
    },
    run() {
      if (running !== null) return running;
      running = followChain({
        sql,
        chainId,
        pollIntervalMs,
        logger,
        metrics,
        cache,
        state,
        init,
        guarded,
        sleep,
      });
      return running;
    },
    async stop() {
      state.stopping = true;
      wake();
      if (running !== null) await running.catch(() => {});
      if (state.status !== 'halted') state.status = 'stopped';
    },
  };
}
