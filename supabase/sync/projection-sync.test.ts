// Proves the projection equals the financial database's truth after a scripted sequence (deposit, authorizations approved and declined, capture, refund, withdrawal request, then a reorg, a price drop and a new decline), with every number worked out by hand; merchant names, sealed at rest, opened through a real SoftHSM token for the user's activity; and that a repeated pass writes nothing.
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sql } from '../../shared/db/client.ts';
import { merchantNameContext } from '../../shared/hsm/merchant-names.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { createTestSealing, type TestSealing } from '../../test/support/hsm.ts';
import { createSupabaseTestDatabase, type SupabaseTestDatabase, signUp } from '../tests/harness.ts';
import { defaultSyncLimits } from './limits.ts';
import { createSyncMetrics, type SyncMetrics } from './metrics.ts';
import { createProjectionSync, type ProjectionSync } from './projection-sync.ts';

const WETH_TOKEN = `0x${'e'.repeat(40)}`;
const ONE_WETH = 10n ** 18n;
let services: TestServices;
let sb: SupabaseTestDatabase;
let syncSql: postgres.Sql;
let sync: ProjectionSync;
let metrics: SyncMetrics;
let fin: Sql;
let alice: string;
let bob: string;
let ghost: string;
let sealing: TestSealing;

/** Seconds before now, as a timestamp (stage 1 backdates its rows to fix their order). */
const ago = (s: number) => new Date(Date.now() - s * 1000);

async function financialUser(id: string, creditLimitCents = 2_500_000n) {
  await fin`insert into users (id, credit_limit_cents, daily_limit_cents) values (${id}, ${creditLimitCents.toString()}, 500000)`;
}

async function transfer(
  ref: string,
  kind: string,
  userId: string,
  authorizationId: string | null,
  entries: [account: string, userId: string | null, cents: number][],
  createdAt: Date,
) {
  const [row] = await fin<
    { id: string }[]
  >`insert into ledger_transfers (ref, kind, user_id, authorization_id, created_at)
    values (${ref}, ${kind}, ${userId}, ${authorizationId}, ${createdAt}) returning id::text`;
  await fin`insert into ledger_entries ${fin(
    entries.map(([account, user, cents]) => ({
      transfer_id: row!.id,
      account,
      user_id: user,
      amount_cents: String(cents),
    })),
  )}`;
}

async function authorization(a: {
  id: string;
  userId: string;
  cardId: string;
  status: string;
  approved: boolean;
  requestedCents: number;
  approvedCents: number;
  heldCents: number;
  capturedCents?: number;
  decision: string;
  declineReason?: string;
  createdAt?: Date;
}) {
  const sealed = await sealing.envelope.seal('TEST GROCER', merchantNameContext(a.id));
  await fin`insert into authorizations (id, user_id, card_id, status, approved, requested_cents, approved_cents, held_cents,
      captured_cents, decision, decline_reason, decision_source, merchant_category_code, merchant_name_sealed, created_at, updated_at)
    values (${a.id}, ${a.userId}, ${a.cardId}, ${a.status}, ${a.approved}, ${a.requestedCents}, ${a.approvedCents}, ${a.heldCents},
      ${a.capturedCents ?? 0}, ${a.decision}, ${a.declineReason ?? null}, 'redis', '5411', ${sealed},
      ${a.createdAt ?? new Date()}, ${a.createdAt ?? new Date()})`;
}

async function chainEvent(e: {
  userId: string;
  blockHash: string;
  name: string;
  amountBase: bigint;
  applied: boolean;
  createdAt?: Date;
}) {
  await fin`insert into chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address, event_name,
      args, user_id, applied_at, created_at)
    values (31337, ${e.blockHash}, 0, 10, ${`0x${'a'.repeat(64)}`}, ${`0x${'c'.repeat(40)}`}, ${e.name},
      ${fin.json({ token: WETH_TOKEN.toUpperCase(), amount: e.amountBase.toString() })}, ${e.userId},
      ${e.applied ? (e.createdAt ?? new Date()) : null}, ${e.createdAt ?? new Date()})`;
}

async function summary(userId: string) {
  const [row] =
    await sb.sql`select account_status, card_status, collateral_value_cents::text, borrow_power_cents::text,
      credit_limit_cents::text, debt_onchain_cents::text, unsettled_cents::text, holds_cents::text, available_cents::text,
      health_factor::text, stale_asset_ids from public.account_summaries where user_id = ${userId}`;
  return row;
}

async function activity(userId: string) {
  return sb.sql`select id, kind, status, outcome, amount_cents::text, asset_id, amount_base, merchant_name, authorization_id,
      decline_code, decline_message from public.account_activity where user_id = ${userId} order by occurred_at desc, id`;
}

async function rowsWritten(): Promise<number> {
  const metric = await metrics.syncRowsWritten.get();
  return metric.values.reduce((sum, v) => sum + v.value, 0);
}

beforeAll(async () => {
  services = await setUpServices();
  fin = services.database.sql;
  sealing = await createTestSealing(fin);
  sb = await createSupabaseTestDatabase();
  syncSql = postgres(sb.url, { max: 3, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  metrics = createSyncMetrics();
  sync = createProjectionSync({
    supabase: syncSql,
    financial: services.sqlFor('credana_supabase_sync'),
    limits: defaultSyncLimits,
    metrics,
    logger: { info() {}, warn() {}, error() {} },
    // A process of its own view: it unwraps the data key through the token on first use.
    merchantNames: sealing.another().names,
  });

  // WETH at $3,000, LTV 80 %, liquidation threshold 82.5 %.
  await fin`insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
      liquidation_threshold_bps, price_age_max_s)
    values ('WETH', 31337, ${WETH_TOKEN}, 18, ${`0x${'f'.repeat(40)}`}, 8, 8000, 8250, 3600)`;
  await fin`insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', 1, 300000000000, ${ago(120)})`;

  alice = await signUp(sb.sql);
  bob = await signUp(sb.sql);
  ghost = randomUUID(); // In the financial database only (no Supabase account): never projected.
  for (const id of [alice, bob, ghost]) await financialUser(id);
  await fin`insert into cards (id, user_id, status, frozen) values ('ic_alice', ${alice}, 'active', false),
    ('ic_bob', ${bob}, 'active', true)`;
  await fin`insert into cards (id, user_id, status, frozen, created_at, updated_at)
    values ('ic_bob_old', ${bob}, 'canceled', false, ${ago(86_400)}, ${ago(86_400)})`;

  // Stage 1, in order: Alice deposits 1 WETH; authorization 1 is approved for $50.00 (hold); authorization 2
  // is declined (card frozen); $40.00 of authorization 1 is captured (hold released); $10.00 is refunded;
  // Alice requests to withdraw 0.25 WETH (pending on-chain). Bob is declined for lack of credit.
  await chainEvent({
    userId: alice,
    blockHash: '0xb1',
    name: 'Deposited',
    amountBase: ONE_WETH,
    applied: true,
    createdAt: ago(60),
  });
  await fin`insert into positions (user_id, asset_id, collateral_base, updated_at) values (${alice}, 'WETH', ${ONE_WETH.toString()}, ${ago(60)})`;
  await authorization({
    id: 'iauth_1',
    userId: alice,
    cardId: 'ic_alice',
    status: 'pending',
    approved: true,
    requestedCents: 5000,
    approvedCents: 5000,
    heldCents: 5000,
    decision: 'approved',
    createdAt: ago(50),
  });
  await transfer(
    'hold:evt_1',
    'hold',
    alice,
    'iauth_1',
    [
      ['user_holds', alice, 5000],
      ['program_holds', null, -5000],
    ],
    ago(50),
  );
  await authorization({
    id: 'iauth_2',
    userId: alice,
    cardId: 'ic_alice',
    status: 'closed',
    approved: false,
    requestedCents: 2000,
    approvedCents: 0,
    heldCents: 0,
    decision: 'declined',
    declineReason: 'card_frozen',
    createdAt: ago(40),
  });
  await transfer(
    'capture:ipi_1',
    'capture',
    alice,
    'iauth_1',
    [
      ['user_holds', alice, -5000],
      ['program_holds', null, 5000],
      ['user_unsettled', alice, 4000],
      ['program_card_spend', null, -4000],
    ],
    ago(30),
  );
  await fin`update authorizations set status = 'closed', held_cents = 0, captured_cents = 4000 where id = 'iauth_1'`;
  await transfer(
    'refund:ipi_2',
    'refund',
    alice,
    'iauth_1',
    [
      ['user_unsettled', alice, -1000],
      ['program_card_spend', null, 1000],
    ],
    ago(20),
  );
  await chainEvent({
    userId: alice,
    blockHash: '0xb9',
    name: 'WithdrawalRequested',
    amountBase: ONE_WETH / 4n,
    applied: false,
    createdAt: ago(10),
  });
  await fin`update positions set pending_withdrawal_base = ${(ONE_WETH / 4n).toString()} where user_id = ${alice}`;
  await fin`insert into credit_accounts (user_id, unsettled_cents, holds_cents) values (${alice}, 3000, 0)`;
  await authorization({
    id: 'iauth_3',
    userId: bob,
    cardId: 'ic_bob',
    status: 'closed',
    approved: false,
    requestedCents: 700,
    approvedCents: 0,
    heldCents: 0,
    decision: 'declined',
    declineReason: 'insufficient_credit',
    createdAt: ago(5),
  });
});

afterAll(async () => {
  await syncSql?.end({ timeout: 5 });
  await sb?.close();
  await services?.close();
  sealing?.close();
});

const grocer = { merchant_name: 'TEST GROCER' };
const none = {
  outcome: null,
  amount_cents: null,
  asset_id: null,
  amount_base: null,
  merchant_name: null,
  authorization_id: null,
  decline_code: null,
  decline_message: null,
};

describe('projection after a scripted sequence', () => {
  it('equals the hand-computed truth on the first pass', async () => {
    expect(await sync.runPass()).toBe(3); // alice, bob and the ghost (read, but not projected).

    // 0.75 WETH net × $3,000 = $2,250.00; × 80 % = $1,800.00 of borrow power; × 82.5 % = $1,856.25.
    // Available = min($25,000, $1,800) − $30.00 unsettled = $1,770.00. Health = 185625 / 3000 = 61.875.
    expect(await summary(alice)).toEqual({
      account_status: 'active',
      card_status: 'active',
      collateral_value_cents: '225000',
      borrow_power_cents: '180000',
      credit_limit_cents: '2500000',
      debt_onchain_cents: '0',
      unsettled_cents: '3000',
      holds_cents: '0',
      available_cents: '177000',
      health_factor: '61.875000000000000000',
      stale_asset_ids: [],
    });
    expect(await summary(bob)).toEqual({
      account_status: 'active',
      card_status: 'frozen',
      collateral_value_cents: '0',
      borrow_power_cents: '0',
      credit_limit_cents: '2500000',
      debt_onchain_cents: '0',
      unsettled_cents: '0',
      holds_cents: '0',
      available_cents: '0',
      health_factor: null,
      stale_asset_ids: [],
    });
    expect(await summary(ghost)).toBeUndefined();

    expect(await activity(alice)).toEqual([
      {
        ...none,
        id: 'chain:31337:0xb9:0',
        kind: 'withdrawal',
        status: 'pending',
        asset_id: 'WETH',
        amount_base: '250000000000000000',
      },
      {
        ...none,
        ...grocer,
        id: 'refund:ipi_2',
        kind: 'refund',
        status: 'posted',
        amount_cents: '1000',
        authorization_id: 'iauth_1',
      },
      {
        ...none,
        ...grocer,
        id: 'capture:ipi_1',
        kind: 'capture',
        status: 'posted',
        amount_cents: '4000',
        authorization_id: 'iauth_1',
      },
      {
        ...none,
        ...grocer,
        id: 'authorization:iauth_2',
        kind: 'authorization',
        status: 'closed',
        outcome: 'declined',
        amount_cents: '2000',
        authorization_id: 'iauth_2',
        decline_code: 'card_frozen',
        decline_message: 'Your card is frozen. Unfreeze it in the app to pay with it.',
      },
      {
        ...none,
        ...grocer,
        id: 'authorization:iauth_1',
        kind: 'authorization',
        status: 'closed',
        outcome: 'approved',
        amount_cents: '5000',
        authorization_id: 'iauth_1',
      },
      {
        ...none,
        id: 'chain:31337:0xb1:0',
        kind: 'deposit',
        status: 'confirmed',
        asset_id: 'WETH',
        amount_base: '1000000000000000000',
      },
    ]);
    expect((await activity(bob)).map((r) => [r['id'], r['decline_code'], r['decline_message']])).toEqual([
      [
        'authorization:iauth_3',
        'insufficient_credit',
        'Not enough available credit. Add collateral or repay to spend more.',
      ],
    ]);
  });

  it('follows a reorg, a price drop and a new decline incrementally', async () => {
    // The deposit's block is reorged out and the same deposit lands in another block.
    await fin`delete from chain_events where block_hash = '0xb1'`;
    await chainEvent({
      userId: alice,
      blockHash: '0xb2',
      name: 'Deposited',
      amountBase: ONE_WETH,
      applied: true,
    });
    // WETH drops to $2,000.
    await fin`insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', 2, 200000000000, now())`;
    await authorization({
      id: 'iauth_4',
      userId: bob,
      cardId: 'ic_bob',
      status: 'closed',
      approved: false,
      requestedCents: 900,
      approvedCents: 0,
      heldCents: 0,
      decision: 'declined',
      declineReason: 'card_frozen',
    });

    // Alice and Bob at least (others changed within the overlap window are recomputed too, harmlessly).
    expect(await sync.runPass()).toBeGreaterThanOrEqual(2);
    // 0.75 × $2,000 = $1,500.00; borrow $1,200.00; threshold $1,237.50; available $1,170.00; health 41.25.
    expect(await summary(alice)).toMatchObject({
      collateral_value_cents: '150000',
      borrow_power_cents: '120000',
      available_cents: '117000',
      health_factor: '41.250000000000000000',
    });
    const ids = (await activity(alice)).map((r) => r['id']);
    expect(ids).toContain('chain:31337:0xb2:0');
    expect(ids).not.toContain('chain:31337:0xb1:0');
    expect(ids).toHaveLength(6);
    expect((await activity(bob)).map((r) => r['id'])).toEqual([
      'authorization:iauth_4',
      'authorization:iauth_3',
    ]);
  });

  it('writes nothing when nothing changed (idempotent), and reports a small lag', async () => {
    const before = await rowsWritten();
    const [stamp] = await sb.sql`select synced_at from public.account_summaries where user_id = ${alice}`;
    await sync.runPass();
    await sync.runSweepBatch({ force: true });
    expect(await rowsWritten()).toBe(before);
    const [after] = await sb.sql`select synced_at from public.account_summaries where user_id = ${alice}`;
    expect(after?.['synced_at']).toEqual(stamp?.['synced_at']);
    const lag = (await metrics.syncLag.get()).values[0]?.value;
    expect(lag).toBeGreaterThanOrEqual(0);
    expect(lag).toBeLessThan(5);
  });

  it('picks up a price going stale (no row changes) on the sweep', async () => {
    // A worker with a 1 s overlap, once every stamped change is more than 1 s behind its cursor: its
    // incremental pass then sees nothing when time alone makes the price stale…
    const narrow = createProjectionSync({
      supabase: syncSql,
      financial: services.sqlFor('credana_supabase_sync'),
      limits: { ...defaultSyncLimits, projectionOverlapS: 1 },
      metrics,
      logger: { info() {}, warn() {}, error() {} },
    });
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await narrow.runPass();
    await fin`update prices set updated_at = now() - interval '2 hours' where asset_id = 'WETH'`;
    expect(await narrow.runPass()).toBe(0);
    expect((await summary(alice))?.['stale_asset_ids']).toEqual([]);
    // …and the sweep values the stale asset at zero.
    await narrow.runSweepBatch({ force: true });
    expect(await summary(alice)).toMatchObject({
      collateral_value_cents: '0',
      available_cents: '-3000',
      stale_asset_ids: ['WETH'],
    });
  });
});
