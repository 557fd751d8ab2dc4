/**
 * After a commit: the touched users' cached positions are rewritten from Postgres (write-through,
 * absolute values), unsettled cents move once per event key, and every changed price is published
 * to the hot path. When a write fails, the user is remembered as dirty; once Redis answers again the
 * cached account is invalidated and rebuilt from Postgres (the fallback), which also recovers any
 * unsettled move the failed write carried. The rebuild goes through the shared unwritten-money guard
 * (shared/redis/rebuild-guard.ts): while the user has outbox entries the ledger writer has not
 * written, or dead-lettered ones, Postgres lags Redis and a rebuild would hand back spent credit, so
 * the user stays dirty and only the chain-owned fields are rewritten meanwhile.
 */
import type { Logger } from 'pino';
import { LIMITS } from '../../shared/chain/limits.ts';
import type { Sql } from '../../shared/db/client.ts';
import { type AssetRow, chainStateOfUsers, pricesInForce } from '../../shared/db/queries/chain.ts';
import { classifyRedisCallError } from '../../shared/errors.ts';
import { writeChainState } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { channels, pricesKey } from '../../shared/redis/keys.ts';
import { publishAsset, publishPriceInForce } from '../../shared/redis/market.ts';
import { publishToAll } from '../../shared/redis/pubsub.ts';
import { rebuildIfWritten } from '../../shared/redis/rebuild-guard.ts';
import type { Touched } from './index.ts';

export interface CacheWriterOptions {
  sql: Sql;
  redis: Redis;
  prefix: string;
  logger: Logger;
}

export interface CacheWriter {
  /** Writes what a commit touched. Never throws for Redis failures (they leave users dirty). */
  write(touched: Touched): Promise<void>;
  /** Remembers users whose cached account may be stale (rebuilt by repair()). */
  markDirty(userIds: Iterable<string>, error: unknown): void;
  /** Invalidates and rebuilds dirty users; returns how many are still dirty. */
  repair(): Promise<number>;
  /** Publishes assets' risk parameters and their prices in force (at start, for hot paths' memory). */
  publishMarket(assets: readonly AssetRow[]): Promise<void>;
  readonly dirty: ReadonlySet<string>;
}

export function createCacheWriter(options: CacheWriterOptions): CacheWriter {
  const { sql, redis, prefix, logger } = options;
  const dirty = new Set<string>();

  const markDirty = (userId: string, error: unknown) => {
    if (dirty.size >= LIMITS.redisDirtyUsersMax) {
      logger.error({ userId }, 'redis dirty set full; cached account left stale until its TTL or a rebuild');
      return;
    }
    if (!dirty.has(userId)) logger.warn({ userId, err: error }, 'redis write-through failed; will rebuild');
    dirty.add(userId);
  };

  const writeUsers = async (touched: Touched) => {
    const moves = new Map<string, Touched['unsettledMoves']>();
    for (const move of touched.unsettledMoves) {
      const list = moves.get(move.userId) ?? [];
      list.push(move);
      moves.set(move.userId, list);
    }
    const users = [...touched.users];
    for (let i = 0; i < users.length; i += LIMITS.redisUsersPerBatchMax) {
      const states = await chainStateOfUsers(sql, users.slice(i, i + LIMITS.redisUsersPerBatchMax));
      await Promise.all(
        states.map(async (state) => {
          if (dirty.has(state.userId)) return; // rebuilt from Postgres by repair()
          try {
            const own = moves.get(state.userId) ?? [];
            if (own.length === 0) {
              await writeChainState(redis, prefix, state.userId, state);
            } else {
              for (const move of own) {
                await writeChainState(redis, prefix, state.userId, {
                  ...state,
                  unsettledCentsDelta: { eventKey: move.eventKey, amountCents: move.amountCents },
                });
              }
            }
          } catch (error) {
            markDirty(state.userId, error);
          }
        }),
      );
    }
  };

  const publishPrices = (assets: ReadonlySet<string>) => publishPricesInForce(options, assets);

  return {
    get dirty() {
      return dirty;
    },
    async write(touched) {
      await writeUsers(touched);
      await publishPrices(touched.assets);
    },
    markDirty(userIds, error) {
      for (const userId of userIds) markDirty(userId, error);
    },
    async publishMarket(assets) {
      for (const asset of assets) {
        await publishAsset(redis, prefix, {
          assetId: asset.assetId,
          tokenDecimals: asset.tokenDecimals,
          priceDecimals: asset.priceDecimals,
          ltvBps: asset.ltvBps,
          liquidationThresholdBps: asset.liquidationThresholdBps,
          priceAgeMaxS: asset.priceAgeMaxS,
          priceAnswerMin: asset.priceAnswerMin,
          priceAnswerMax: asset.priceAnswerMax,
          priceFutureSkewS: asset.priceFutureSkewS,
        });
      }
      await publishPrices(new Set(assets.map((a) => a.assetId)));
    },
    async repair() {
      for (const userId of [...dirty]) {
        try {
          const result = await rebuildIfWritten(redis, sql, prefix, userId, { expectedFingerprint: null });
          if (result !== 'pending') {
            dirty.delete(userId);
            continue;
          }
          // Postgres lags Redis for this user: keep the cached account (and its unwritten holds and
          // spend), rewrite only what the chain owns, absolute, without the unsettled move (counting
          // the settled spend twice until the rebuild errs towards less credit), and try again later.
          const [state] = await chainStateOfUsers(sql, [userId]);
          if (state !== undefined) await writeChainState(redis, prefix, userId, state);
        } catch (error) {
          // Redis or Postgres still away: try again next time. A bug goes up to the runtime's step.
          if (!classifyRedisCallError(error).retryable) throw error;
          break;
        }
      }
      return dirty.size;
    },
  };
}

/**
 * Publishes each asset's price in force to Redis and the hot paths (none in force: removed), after a
 * range or reorg touched its rounds. A failure is logged: the hot path keeps its last price until the next.
 */
async function publishPricesInForce(
  { sql, redis, prefix, logger }: Pick<CacheWriterOptions, 'sql' | 'redis' | 'prefix' | 'logger'>,
  assets: ReadonlySet<string>,
): Promise<void> {
  if (assets.size === 0) return;
  const inForce = await pricesInForce(sql, [...assets]);
  for (const assetId of assets) {
    const price = inForce.get(assetId);
    try {
      if (price === undefined) {
        // A reorg removed the asset's only rounds: no price is in force, so none may stay in memory.
        await redis.hdel(pricesKey(prefix), assetId);
        await publishToAll(
          redis,
          channels(prefix).prices,
          JSON.stringify({ assetId, answer: '0', updatedAtS: 0, roundId: '0', inForce: true }),
        );
        continue;
      }
      // The price in force (never a held-back round), also after a reorg undid a newer one.
      await publishPriceInForce(redis, prefix, {
        assetId,
        answer: price.answer,
        updatedAtS: Number(price.updatedAtS),
        roundId: price.roundId,
      });
    } catch (error) {
      logger.warn(
        { assetId, err: error },
        'price publish failed; the hot path keeps its last price until the next',
      );
    }
  }
}
