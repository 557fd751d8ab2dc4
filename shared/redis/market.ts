/**
 * Global market data: asset risk parameters and the latest prices. The hot path keeps them in
 * memory (never inside the per-user script), loaded at start and refreshed by pub/sub; the indexer
 * publishes. Freshness is judged per decision by the price's own timestamp.
 *
 * Oracle sanity (docs/chain.md "Oracle sanity"): the indexer publishes only the price in force
 * (never a held-back round), each message marked `inForce`, and the view takes such a message as
 * it comes, even when it is older than what it holds: that is how a price round orphaned by a reorg
 * leaves every process. The view keeps each quote as received; the stateless rules are checked again
 * by every decision on its own clock (isPriceFresh, shared/credit.ts): a quote outside the asset's
 * answer bounds, too old, or stamped beyond its future skew is worth zero for that decision.
 */
import type { AssetRisk, PriceQuote } from '../credit.ts';
import type { Redis } from './client.ts';
import { assetsKey, channels, pricesKey } from './keys.ts';
import { publishToAll, subscribeToAll } from './pubsub.ts';

export interface AssetMessage {
  assetId: string;
  tokenDecimals: number;
  priceDecimals: number;
  ltvBps: string;
  liquidationThresholdBps: string;
  priceAgeMaxS: number;
  /** Oracle sanity (decimal strings; absent from publishers that predate them). */
  priceAnswerMin?: string;
  priceAnswerMax?: string;
  priceFutureSkewS?: number;
}

export function parseAsset(json: string): AssetRisk {
  const a = JSON.parse(json) as AssetMessage;
  return {
    assetId: a.assetId,
    tokenDecimals: a.tokenDecimals,
    priceDecimals: a.priceDecimals,
    ltvBps: BigInt(a.ltvBps),
    liquidationThresholdBps: BigInt(a.liquidationThresholdBps),
    priceAgeMaxS: a.priceAgeMaxS,
    ...(a.priceAnswerMin === undefined ? {} : { priceAnswerMin: BigInt(a.priceAnswerMin) }),
    ...(a.priceAnswerMax === undefined ? {} : { priceAnswerMax: BigInt(a.priceAnswerMax) }),
    ...(a.priceFutureSkewS === undefined ? {} : { priceFutureSkewS: a.priceFutureSkewS }),
  };
}

export function parsePrice(json: string): { assetId: string; quote: PriceQuote; inForce: boolean } {
  const p = JSON.parse(json) as { assetId: string; answer: string; updatedAtS: number; inForce?: boolean };
  return {
    assetId: p.assetId,
    quote: { answer: BigInt(p.answer), updatedAtS: p.updatedAtS },
    inForce: p.inForce === true,
  };
}

export interface PriceInForce {
  assetId: string;
  answer: bigint;
  updatedAtS: number;
  roundId: bigint;
}

/**
 * Stores the price in force and tells every hot-path process, which replace what they hold with it
 * (the indexer publishes in commit order; after a reorg this is an older round than the orphan's).
 */
export async function publishPriceInForce(redis: Redis, prefix: string, price: PriceInForce): Promise<void> {
  const payload = JSON.stringify({
    assetId: price.assetId,
    answer: price.answer.toString(),
    updatedAtS: price.updatedAtS,
    roundId: price.roundId.toString(),
    inForce: true,
  });
  await redis.hset(pricesKey(prefix), price.assetId, payload);
  await publishToAll(redis, channels(prefix).prices, payload);
}

/** Stores an asset's parameters and tells every hot-path process. */
export async function publishAsset(redis: Redis, prefix: string, asset: AssetRisk): Promise<void> {
  const payload = JSON.stringify({
    assetId: asset.assetId,
    tokenDecimals: asset.tokenDecimals,
    priceDecimals: asset.priceDecimals,
    ltvBps: asset.ltvBps.toString(),
    liquidationThresholdBps: asset.liquidationThresholdBps.toString(),
    priceAgeMaxS: asset.priceAgeMaxS,
    ...(asset.priceAnswerMin === undefined ? {} : { priceAnswerMin: asset.priceAnswerMin.toString() }),
    ...(asset.priceAnswerMax === undefined ? {} : { priceAnswerMax: asset.priceAnswerMax.toString() }),
    ...(asset.priceFutureSkewS === undefined ? {} : { priceFutureSkewS: asset.priceFutureSkewS }),
  } satisfies AssetMessage);
  await redis.hset(assetsKey(prefix), asset.assetId, payload);
  await publishToAll(redis, channels(prefix).assets, payload);
}

/**
 * In-memory market view with a pub/sub subscription. `subscriber` is a connection of its own (on a
 * cluster created with `shardedSubscriber: true`).
 */
export interface Market {
  assets: Map<string, AssetRisk>;
  prices: Map<string, PriceQuote>;
  /** Re-reads both hashes (used at start and after a reconnect). */
  reload(): Promise<void>;
  close(): void;
}

export async function createMarket(redis: Redis, subscriber: Redis, prefix: string): Promise<Market> {
  const assets = new Map<string, AssetRisk>();
  const prices = new Map<string, PriceQuote>();
  const ch = channels(prefix);
  const applyPrice = (message: string, fromReload: boolean) => {
    // Kept as received: each decision judges it on its own clock (isPriceFresh, shared/credit.ts: out of
    // the asset's bounds, too old, or stamped beyond the future skew = worth zero). Judged once here, a
    // price stamped ahead of a clock that was behind stayed worth zero after the clock was right, until
    // the next price (docs/chaos.md item 14).
    const { assetId, quote, inForce } = parsePrice(message);
    const current = prices.get(assetId);
    // The indexer's price in force replaces what we hold (after a reorg it is older than the orphan),
    // and so does the stored hash on a reload. Other publishers' messages (tests, benchmarks) may
    // arrive out of order: never replace a newer one of theirs with an older one.
    if (fromReload || inForce || current === undefined || current.updatedAtS <= quote.updatedAtS) {
      prices.set(assetId, quote);
    }
  };
  // Messages that arrive while a reload is in flight are applied again after it, so a hash read that
  // the server answered before their write cannot bring back what they replaced.
  let duringReload: string[] | null = null;
  const reload = async () => {
    const mine: string[] = [];
    duringReload = mine;
    try {
      const [assetRows, priceRows] = await Promise.all([
        redis.hgetall(assetsKey(prefix)),
        redis.hgetall(pricesKey(prefix)),
      ]);
      for (const json of Object.values(assetRows)) {
        const asset = parseAsset(json);
        assets.set(asset.assetId, asset);
      }
      for (const json of Object.values(priceRows)) applyPrice(json, true);
      for (const message of mine) applyPrice(message, false);
    } finally {
      if (duringReload === mine) duringReload = null;
    }
  };
  const onMessage = (channel: string, message: string) => {
    try {
      if (channel === ch.assets) {
        const asset = parseAsset(message);
        // New bounds or skew apply to the price already held at the next decision.
        assets.set(asset.assetId, asset);
      } else if (channel === ch.prices) {
        applyPrice(message, false);
        duringReload?.push(message);
      }
    } catch {
      // A malformed message is ignored; the next reload corrects the view.
    }
  };
  // After a reconnect or a failover, messages published meanwhile were missed: reload.
  await subscribeToAll(subscriber, [ch.assets, ch.prices], {
    onMessage,
    onResubscribed: () => {
      reload().catch(() => {});
    },
  });
  await reload();
  return {
    assets,
    prices,
    reload,
    close: () => subscriber.disconnect(),
  };
}
