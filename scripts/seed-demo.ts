/**
 * Demo data for the local stack: one collateral asset (WETH at $3,000 with a fresh price) and two
 * users with an active card and 2 WETH each. Idempotent: fixed ids, `on conflict do nothing`.
 */
import type { Config } from '../shared/config.ts';
import { computeCredit } from '../shared/credit.ts';
import type { Sql } from '../shared/db/client.ts';
import { ensureAccount, publishPrice } from '../shared/redis/account.ts';
import type { Redis } from '../shared/redis/client.ts';
import { publishAsset } from '../shared/redis/market.ts';

const WETH = {
  assetId: 'WETH',
  tokenDecimals: 18,
  priceDecimals: 8,
  ltvBps: 8000n,
  liquidationThresholdBps: 8250n,
  priceAgeMaxS: 86_400,
};
const USERS = [
  { userId: '00000000-0000-4000-8000-000000000001', cardId: 'ic_demo_alice', wethBase: 2n * 10n ** 18n },
  { userId: '00000000-0000-4000-8000-000000000002', cardId: 'ic_demo_bob', wethBase: 5n * 10n ** 17n },
];

export async function seedDemo(sql: Sql, redis: Redis, config: Config) {
  const prefix = config.REDIS_KEY_PREFIX;
  const nowS = Math.floor(Date.now() / 1000);
  const price = 300_000_000_000n;
  await sql`insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
      liquidation_threshold_bps, price_age_max_s)
    values ('WETH', ${config.CHAIN_ID}, '0x0000000000000000000000000000000000000001', 18,
      '0x0000000000000000000000000000000000000002', 8, 8000, 8250, ${WETH.priceAgeMaxS})
    on conflict (id) do nothing`;
  await sql`insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', ${String(nowS)}, ${price.toString()}, ${new Date(nowS * 1000)})
    on conflict do nothing`;
  await publishAsset(redis, prefix, WETH);
  await publishPrice(redis, prefix, {
    assetId: 'WETH',
    answer: price,
    updatedAtS: nowS,
    roundId: BigInt(nowS),
  });
  const out = [];
  for (const u of USERS) {
    await sql`insert into users (id, credit_limit_cents, daily_limit_cents)
      values (${u.userId}, ${config.CREDIT_LIMIT_CENTS_DEFAULT.toString()}, ${config.DAILY_LIMIT_CENTS_DEFAULT.toString()})
      on conflict (id) do nothing`;
    await sql`insert into credit_accounts (user_id) values (${u.userId}) on conflict do nothing`;
    await sql`insert into cards (id, user_id) values (${u.cardId}, ${u.userId}) on conflict (id) do nothing`;
    await sql`insert into positions (user_id, asset_id, collateral_base) values (${u.userId}, 'WETH', ${u.wethBase.toString()})
      on conflict do nothing`;
    await ensureAccount(redis, sql, prefix, u.userId);
    const credit = computeCredit({
      holdings: [{ assetId: 'WETH', amountBase: u.wethBase, pendingWithdrawalBase: 0n }],
      assets: new Map([['WETH', WETH]]),
      prices: new Map([['WETH', { answer: price, updatedAtS: nowS }]]),
      nowS,
      debtOnchainUsdc: 0n,
      unsettledCents: 0n,
      holdsCents: 0n,
      creditLimitCents: config.CREDIT_LIMIT_CENTS_DEFAULT,
    });
    out.push({ userId: u.userId, cardId: u.cardId, availableCents: credit.availableCents });
  }
  return out;
}
