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
import { type Address, type PublicClient, zeroHash } from 'viem';
import { type ContractsFile, feedProxyAbi } from '../../shared/chain/contracts/index.ts';
import { assertChainSettings, assertLimits, LIMITS } from '../../shared/chain/limits.ts';
import { classifyRpcError, NonRetryableError, ReorgTooDeepError } from '../../shared/chain/rpc/index.ts';
import { LOCK_INDEXER_SESSION, tryExclusive } from '../../shared/db/locks.ts';
import { type AssetRow, loadAssets } from '../../shared/db/queries/chain.ts';
import { insertAudit } from '../../shared/db/queries/ledger.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { createSleeper } from '../../shared/sleeper.ts';
import {
  type ApplyContext,
  commitRange,
  commitReorg,
  newTouched,
  prepareRecords,
  type RangeInput,
  type Touched,
} from '../apply/index.ts';
import { type CacheWriter, createCacheWriter } from '../apply/redis.ts';
import { type BlockRef, type EventRecord, readCursor, recentBlocks } from '../store/index.ts';
import { createSync, type Sync, type SyncBatch } from '../sync/index.ts';
import { createIndexerMetrics, type IndexerMetrics } from './metrics.ts';

export { createIndexerMetrics, type IndexerMetrics } from './metrics.ts';

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

export type IndexerStatus = 'new' | 'running' | 'halted' | 'stopped';

export interface StepResult {
  kind: 'blocks' | 'reorg' | 'idle';
  cursor: BlockRef;
  head: bigint;
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

export function cursorIdOf(chainId: number, vault: Address): string {
  return `vault:${chainId}:${vault.toLowerCase()}`;
}

/**
 * What applying chain events needs to know: the chain's assets by token and by the aggregator behind
 * each feed proxy (events come from the aggregator, never from the proxy). Used by the indexer and by
 * wallet linking, so both apply events the same way.
 */
export async function loadApplyContext(
  options: Pick<
    IndexerOptions,
    'sql' | 'client' | 'contracts' | 'chainId' | 'confirmations' | 'reorgDepthMax'
  >,
): Promise<{ ctx: ApplyContext; assets: AssetRow[] }> {
  const assets = await loadAssets(options.sql, options.chainId);
  const aggregators = await Promise.all(
    assets.map(
      async (a) =>
        (
          (await options.client.readContract({
            address: a.feed,
            abi: feedProxyAbi,
            functionName: 'aggregator',
          })) as Address
        ).toLowerCase() as Address,
    ),
  );
  return {
    assets,
    ctx: {
      chainId: options.chainId,
      cursorId: cursorIdOf(options.chainId, options.contracts.vault),
      confirmations: options.confirmations,
      reorgDepthMax: options.reorgDepthMax,
      assetByToken: new Map(assets.map((a) => [a.token, a.assetId])),
      assetByAggregator: new Map(assets.map((a, i) => [aggregators[i] as Address, a.assetId])),
    },
  };
}

export function createIndexer(options: IndexerOptions): Indexer {
  assertLimits();
  assertChainSettings(options);
  const { sql, logger, client, contracts } = options;
  const chainId = options.chainId;
  const metrics = options.metrics ?? createIndexerMetrics();
  const cache = createCacheWriter({ sql, redis: options.redis, prefix: options.prefix, logger });
  const pollIntervalMs = options.pollIntervalMs ?? LIMITS.pollIntervalMs;
  const prefetch = Math.min(options.prefetchRangesMax ?? LIMITS.prefetchRangesMax, LIMITS.prefetchRangesMax);
  const sync = createSync({
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

  let status: IndexerStatus = 'new';
  let cursor: BlockRef | null = null;
  let ctx: ApplyContext | null = null;
  let stopping = false;
  const { sleep, wake } = createSleeper();
  let running: Promise<void> | null = null;

  const init = async () => {
    if (ctx !== null) return;
    const loaded = await loadApplyContext(options);
    const assets = loaded.assets;
    if (assets.length === 0)
      logger.warn({ chainId }, 'no assets configured for this chain; no collateral will count');
    sync.setAggregators([...loaded.ctx.assetByAggregator.keys()]);
    ctx = loaded.ctx;
    cursor = await readCursor(sql, ctx.cursorId);
    if (cursor === null) {
      const start = BigInt(contracts.deployBlock) - 1n;
      const parent = start < 0n ? null : await sync.header(start);
      cursor =
        parent === null ? { number: -1n, hash: zeroHash } : { number: parent.number, hash: parent.hash };
    }
    metrics.cursorBlock.set(Number(cursor.number));
    try {
      await cache.publishMarket(assets);
    } catch (error) {
      logger.warn(
        { err: error },
        'could not publish the market at start; prices follow with the next update',
      );
    }
    logger.info(
      {
        chainId,
        cursor: cursor.number.toString(),
        assets: assets.map((a) => a.assetId),
        confirmations: options.confirmations,
      },
      'indexer ready',
    );
  };

  const context = (): ApplyContext => {
    if (ctx === null) throw new Error('indexer not initialised');
    return ctx;
  };
  const here = (): BlockRef => {
    if (cursor === null) throw new Error('indexer not initialised');
    return cursor;
  };

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

  const commitBlocks = async (
    batch: Extract<SyncBatch, { kind: 'blocks' }> & { records?: EventRecord[] },
  ) => {
    const touched = newTouched();
    const input: RangeInput = batch;
    await sql.begin(async (tx) => {
      await commitRange(tx, context(), input, touched);
      await options.beforeCommit?.({ from: batch.from, to: batch.to.number, events: batch.logs.length });
    });
    cursor = { number: batch.to.number, hash: batch.to.hash };
    afterCommit(touched);
  };

  const rollBack = async (tip: BlockRef, head: bigint): Promise<StepResult> => {
    const remembered = await recentBlocks(sql, chainId, tip.number - BigInt(options.reorgDepthMax));
    const reorg = await sync.findAncestor(tip, remembered, head);
    const touched = newTouched();
    let orphaned = 0;
    await sql.begin(async (tx) => {
      orphaned = await commitReorg(tx, context(), reorg, touched);
    });
    cursor = reorg.ancestor;
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
    while (queue.length > 0 && !stopping) {
      const batch = await (queue.shift() as (typeof queue)[number]);
      issue();
      await commitBlocks(batch);
    }
  };

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

  /** Records a halt durably and loudly: a fatal log line, a metric and an audit row. */
  const halt = async (error: NonRetryableError) => {
    status = 'halted';
    metrics.halts.inc({ code: error.code });
    logger.fatal(
      { code: error.code, detail: error instanceof ReorgTooDeepError ? error.detail : undefined, err: error },
      `ALERT indexer halted: ${error.message}`,
    );
    try {
      await insertAudit(sql, [
        {
          actor: 'indexer',
          action: error.code === 'reorg_too_deep' ? 'chain_reorg_too_deep' : 'indexer_halted',
          entityType: 'chain',
          entityId: String(chainId),
          data: {
            code: error.code,
            message: error.message,
            cursor: cursor === null ? null : { number: cursor.number.toString(), hash: cursor.hash },
          },
        },
      ]);
    } catch (auditError) {
      logger.error({ err: auditError }, 'could not write the halt to the audit log');
    }
  };

  const guarded = async (): Promise<StepResult> => {
    if (status === 'halted')
      throw new NonRetryableError('indexer_halted', 'the indexer halted; restart it after review');
    try {
      const result = await step();
      await cacheWritten();
      return result;
    } catch (error) {
      await cacheWritten();
      // viem wraps what our transport threw; the class decides, wherever it sits in the cause chain.
      const classified = classifyRpcError(error);
      if (classified instanceof NonRetryableError) {
        await halt(classified);
        throw classified;
      }
      throw error;
    }
  };

  return {
    get status() {
      return status;
    },
    get cursor() {
      return cursor;
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
      running = (async () => {
        await init();
        const release = await tryExclusive(sql, LOCK_INDEXER_SESSION, chainId);
        if (release === null) {
          throw new NonRetryableError('indexer_already_running', `another indexer holds chain ${chainId}`);
        }
        status = 'running';
        let failures = 0;
        try {
          while (!stopping) {
            try {
              const result = await guarded();
              failures = 0;
              if (result.kind === 'idle') {
                await cache.repair();
                await sleep(pollIntervalMs);
              }
            } catch (raw) {
              if (raw instanceof NonRetryableError) throw raw;
              const error = classifyRpcError(raw);
              failures++;
              metrics.stepFailures.inc({ code: error.code });
              logger.warn({ err: raw, code: error.code, failures }, 'indexer step failed; retrying');
              if (failures >= LIMITS.stepFailuresMax) throw raw;
              await sleep(Math.min(pollIntervalMs * failures, 30_000));
            }
          }
          status = 'stopped';
        } finally {
          await release();
        }
      })();
      return running;
    },
    async stop() {
      stopping = true;
      wake();
      if (running !== null) await running.catch(() => {});
      if (status !== 'halted') status = 'stopped';
    },
  };
}
