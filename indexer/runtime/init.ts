/**
 * The indexer's start: the chain's assets and the aggregators behind their feeds (what applying events
 * needs), the cursor (or the block before the vault's deployment), and the market published to Redis.
 */
import type { Logger } from 'pino';
import { type Address, zeroHash } from 'viem';
import { feedProxyAbi } from '../../shared/chain/contracts/index.ts';
import { type AssetRow, loadAssets } from '../../shared/db/queries/chain.ts';
import type { ApplyContext } from '../apply/index.ts';
import type { CacheWriter } from '../apply/redis.ts';
import { readCursor } from '../store/index.ts';
import type { Sync } from '../sync/index.ts';
import type { IndexerOptions } from './index.ts';
import type { IndexerMetrics } from './metrics.ts';
import type { RuntimeState } from './state.ts';

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

export interface InitOptions {
  options: IndexerOptions;
  logger: Logger;
  metrics: IndexerMetrics;
  cache: CacheWriter;
  sync: Sync;
  state: RuntimeState;
}

/** Loads assets, resolves feeds' aggregators and the cursor. Idempotent. */
export function createInit({ options, logger, metrics, cache, sync, state }: InitOptions) {
  const { sql, contracts, chainId } = options;
  const init = async () => {
    if (state.ctx !== null) return;
    const loaded = await loadApplyContext(options);
    const assets = loaded.assets;
    if (assets.length === 0)
      logger.warn({ chainId }, 'no assets configured for this chain; no collateral will count');
    sync.setAggregators([...loaded.ctx.assetByAggregator.keys()]);
    const ctx = loaded.ctx;
    state.ctx = ctx;
    let cursor = await readCursor(sql, ctx.cursorId);
    if (cursor === null) {
      const start = BigInt(contracts.deployBlock) - 1n;
      const parent = start < 0n ? null : await sync.header(start);
      cursor =
        parent === null ? { number: -1n, hash: zeroHash } : { number: parent.number, hash: parent.hash };
    }
    state.cursor = cursor;
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
  return init;
}
