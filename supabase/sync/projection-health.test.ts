// Proves the user sees the health of their position in the Supabase projection (real financial Postgres and a Supabase-local database): a warning below the configured line, a liquidation notice below 1, nothing while a price is stale, and the vault's liquidation in the activity feed with what it seized and covered.
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sql } from '../../shared/db/client.ts';
import { WAD } from '../../shared/money.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { createSupabaseTestDatabase, type SupabaseTestDatabase, signUp } from '../tests/harness.ts';
import { defaultSyncLimits } from './limits.ts';
import { createSyncMetrics } from './metrics.ts';
import { healthNotice } from './projection-read.ts';
import { createProjectionSync, type ProjectionSync } from './projection-sync.ts';

const WETH_TOKEN = `0x${'e'.repeat(40)}`;
const ONE_WETH = 10n ** 18n;
const USDC = 10n ** 6n;
let services: TestServices;
let sb: SupabaseTestDatabase;
let syncSql: postgres.Sql;
let fin: Sql;
let user: string;
let round = 1;

function projection(healthWarningBps?: number): ProjectionSync {
  return createProjectionSync({
    supabase: syncSql,
    financial: services.sqlFor('credana_supabase_sync'),
    limits: defaultSyncLimits,
    metrics: createSyncMetrics(),
    logger: { info() {}, warn() {}, error() {} },
    ...(healthWarningBps === undefined ? {} : { healthWarningBps }),
  });
}

async function price(dollars: bigint, updatedAt = new Date()): Promise<void> {
  round++;
  await fin`insert into prices (asset_id, round_id, answer, updated_at)
    values ('WETH', ${round}, ${(dollars * 10n ** 8n).toString()}, ${updatedAt})`;
}

async function summary() {
  const [row] = await sb.sql`select health_factor::text, health_notice, available_cents::text
    from public.account_summaries where user_id = ${user}`;
  return row;
}

beforeAll(async () => {
  services = await setUpServices();
  fin = services.database.sql;
  sb = await createSupabaseTestDatabase();
  syncSql = postgres(sb.url, { max: 3, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  // WETH: LTV 80 %, liquidation threshold 82.5 %, price limit 1 h.
  await fin`insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
      liquidation_threshold_bps, price_age_max_s)
    values ('WETH', 31337, ${WETH_TOKEN}, 18, ${`0x${'f'.repeat(40)}`}, 8, 8000, 8250, 3600)`;
  await fin`insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', 1, 300000000000, now())`;
  user = await signUp(sb.sql);
  await fin`insert into users (id, credit_limit_cents, daily_limit_cents) values (${user}, 10000000, 500000)`;
  await fin`insert into positions (user_id, asset_id, collateral_base) values (${user}, 'WETH', ${ONE_WETH.toString()})`;
  // $2,300 of on-chain debt against 1 WETH: at $3,000 the threshold value is $2,475, health 1.076.
  await fin`insert into credit_accounts (user_id, debt_onchain_usdc) values (${user}, ${(2_300n * USDC).toString()})`;
});

afterAll(async () => {
  await syncSql?.end({ timeout: 5 });
  await sb?.close();
  await services?.close();
});

describe('healthNotice', () => {
  it('is null without debt or with a stale price, liquidation below 1, warning below the line', () => {
    expect(healthNotice(null, false)).toBeNull();
    expect(healthNotice(WAD / 2n, true)).toBeNull();
    expect(healthNotice(WAD - 1n, false)).toBe('liquidation');
    expect(healthNotice(WAD, false)).toBe('warning');
    expect(healthNotice((WAD * 11n) / 10n - 1n, false)).toBe('warning');
    expect(healthNotice((WAD * 11n) / 10n, false)).toBeNull();
    expect(healthNotice((WAD * 11n) / 10n - 1n, false, 10_500)).toBeNull();
  });
});

describe('the health notice in account_summaries', () => {
  it('warns below the configured line, and not when the line is lower', async () => {
    await projection().runPass();
    // Borrow power 1 WETH × $3,000 × 80 % = $2,400; available $2,400 − $2,300 = $100.00.
    expect(await summary()).toEqual({
      health_factor: '1.076086956521739130',
      health_notice: 'warning',
      available_cents: '10000',
    });
    await projection(10_500).runSweepBatch({ force: true });
    expect(await summary()).toMatchObject({ health_factor: '1.076086956521739130', health_notice: null });
  });

  it('says liquidation below 1, where no credit is left', async () => {
    await price(2_700n); // threshold value $2,227.50 against $2,300
    await projection().runPass();
    expect(await summary()).toEqual({
      health_factor: '0.968478260869565217',
      health_notice: 'liquidation',
      available_cents: '-14000', // $2,160 of borrow power − $2,300
    });
  });

  it('clears the notice once the vault booked the liquidation, which shows in the activity feed', async () => {
    // The whole debt covered (the liquidator's close factor is its own test's business): $2,300 × 1.05
    // / $2,700 of WETH seized, floored.
    const seized = 894_444_444_444_444_444n;
    await fin`insert into chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address, event_name,
        args, user_id, applied_at)
      values (31337, ${`0x${'b'.repeat(64)}`}, 3, 20, ${`0x${'a'.repeat(64)}`}, ${`0x${'c'.repeat(40)}`}, 'Liquidated',
        ${fin.json({
          user: `0x${'d'.repeat(40)}`,
          token: WETH_TOKEN,
          liquidator: `0x${'9'.repeat(40)}`,
          collateralSeized: seized.toString(),
          debtCoveredUsdc: (2_300n * USDC).toString(),
          pendingWithdrawalReduced: '0',
        })}, ${user}, now())`;
    await fin`update positions set collateral_base = ${(ONE_WETH - seized).toString()}, updated_at = now() where user_id = ${user}`;
    await fin`update credit_accounts set debt_onchain_usdc = 0, updated_at = now() where user_id = ${user}`;
    await projection().runPass();
    expect(await summary()).toMatchObject({ health_factor: null, health_notice: null });
    const activity = await sb.sql`select kind, status, asset_id, amount_base, amount_cents::text
      from public.account_activity where user_id = ${user}`;
    expect(activity).toEqual([
      {
        kind: 'liquidation',
        status: 'confirmed',
        asset_id: 'WETH',
        amount_base: seized.toString(),
        amount_cents: '230000',
      },
    ]);
  });
});
