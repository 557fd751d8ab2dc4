// Proves the hot path's market view keeps a price as received and leaves the judgement to each decision
// (docs/chaos.md item 14): a price stamped further ahead of this process's clock than its skew (the
// clock is behind, NTP will correct it) is refused while the clock is behind and counts once the clock
// is right — it does not stay worth zero until the next price (an hour on a quiet feed's heartbeat).
// Real Redis, the market's own subscription.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connectRedis, type TestServices } from '../../test/support/db.ts';
import { setPrice, WETH } from '../../test/support/fixtures.ts';
import { setUpServicesWithWeth, WETH_PRICE_E8 } from '../../test/support/hot-path.ts';
import { borrowPower } from '../credit.ts';
import type { Redis } from './client.ts';
import { createMarket, type Market } from './market.ts';

let services: TestServices;
let subscriber: Redis;
let market: Market;

beforeAll(async () => {
  services = await setUpServicesWithWeth();
  subscriber = connectRedis(services, { shardedSubscriber: true });
  market = await createMarket(services.redis, subscriber, services.prefix);
});
afterAll(async () => {
  market?.close();
  subscriber?.disconnect();
  await services?.close();
});

async function until(condition: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`not reached in 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

it('judges a price stamped ahead of a clock that is behind at each decision, not once at receipt', async () => {
  const clockBehindS = 70; // more than the default future skew (60 s)
  const nowS = Math.floor(Date.now() / 1000);
  const stampedS = nowS + clockBehindS;
  const answer = WETH_PRICE_E8 + 1n;
  await setPrice(services.database.sql, services.redis, services.prefix, WETH.assetId, answer, stampedS);
  await until(() => market.prices.get(WETH.assetId)?.updatedAtS === stampedS, 'the price received');
  // Kept as received.
  expect(market.prices.get(WETH.assetId)).toEqual({ answer, updatedAtS: stampedS });
  const holdings = [{ assetId: WETH.assetId, amountBase: 10n ** 18n, pendingWithdrawalBase: 0n }];
  const at = (s: number) => borrowPower({ holdings, assets: market.assets, prices: market.prices, nowS: s });
  // While this process's clock is behind, the price is from its future: worth zero.
  expect(at(nowS).staleAssetIds).toEqual([WETH.assetId]);
  expect(at(nowS).borrowPowerCents).toBe(0n);
  // Once the clock is right, the same price counts.
  expect(at(stampedS).staleAssetIds).toEqual([]);
  expect(at(stampedS).borrowPowerCents).toBeGreaterThan(0n);
});
