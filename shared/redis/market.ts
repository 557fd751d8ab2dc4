/**
 * Global market data: asset risk parameters and the latest prices. The hot path keeps them in
 * memory (never inside the per-user script), loaded at start and refreshed by pub/sub; the indexer
 * publishes. Freshness is judged per decision by the price's own timestamp.
 */
import type { AssetRisk, PriceQuote } from '../credit.ts';
import type { Redis } from './client.ts';
import { assetsKey, channels, pricesKey } from './keys.ts';

export interface AssetMessage {
  assetId: string;
  tokenDecimals: number;
  priceDecimals: number;
  ltvBps: string;
  liquidationThresholdBps: string;
  priceAgeMaxS: number;
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
  };
}

export function parsePrice(json: string): { assetId: string; quote: PriceQuote } {
  const p = JSON.parse(json) as { assetId: string; answer: string; updatedAtS: number };
  return { assetId: p.assetId, quote: { answer: BigInt(p.answer), updatedAtS: p.updatedAtS } };
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
  } satisfies AssetMessage);
  await redis.hset(assetsKey(prefix), asset.assetId, payload);
  await redis.publish(channels(prefix).assets, payload);
}

/** In-memory market view with a pub/sub subscription. */
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
  const reload = async () => {
    const [assetRows, priceRows] = await Promise.all([
      redis.hgetall(assetsKey(prefix)),
      redis.hgetall(pricesKey(prefix)),
    ]);
    for (const json of Object.values(assetRows)) {
      const asset = parseAsset(json);
      assets.set(asset.assetId, asset);
    }
    for (const json of Object.values(priceRows)) {
      const { assetId, quote } = parsePrice(json);
      prices.set(assetId, quote);
    }
  };
  subscriber.on('message', (channel: string, message: string) => {
    try {
      if (channel === ch.assets) {
        const asset = parseAsset(message);
        assets.set(asset.assetId, asset);
      } else if (channel === ch.prices) {
        const { assetId, quote } = parsePrice(message);
        const current = prices.get(assetId);
        // Messages may arrive out of order; never replace a newer price with an older one.
        if (current === undefined || current.updatedAtS <= quote.updatedAtS) prices.set(assetId, quote);
      }
    } catch {
      // A malformed message is ignored; the next reload corrects the view.
    }
  });
  // After a reconnect, messages published meanwhile were missed: reload.
  subscriber.on('ready', () => {
    reload().catch(() => {});
  });
  await subscriber.subscribe(ch.assets, ch.prices);
  await reload();
  return {
    assets,
    prices,
    reload,
    close: () => subscriber.disconnect(),
  };
}
