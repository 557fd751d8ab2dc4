/**
 * Copies from the financial database (system of record) into the analytics store, off the hot path.
 *
 * - card_spend ← ledger transfers of kind capture/refund (their user_unsettled entry, signed), dated
 *   by the Stripe transaction's own `created` (from the stored event), with the merchant category of
 *   the authorization or, for force captures, of the transaction. Watermark: the transfer id, re-read
 *   `transferIdLookback` ids back each run, because ids are drawn before commit and a transaction
 *   that drew a lower id can commit later. Rows are keyed, so re-reading never double-counts.
 * - decisions ← decisions, by decided_at, re-read `decisionLookbackS` back (the ledger writer writes
 *   a decision after it was made, by its lag).
 * - Neither copies a row older than `retainFrom` (past the store's retention).
 * - Everything here is readable as `credana_analytics` (drizzle/0012): the Stripe event is read through
 *   `card_event_facts` (its time and merchant category, never the payload with the cardholder in it),
 *   and no query reads wallets, merchant names or card details. `readAsAnalytics` holds a run to that.
 * - risk_snapshots + hold_snapshots ← one snapshot of every user's credit (computeCredit, exact) and
 *   of every open hold, at one `taken_at`; `analytics.snapshots` lists complete snapshots only.
 */
import { computeCredit, type PriceQuote } from '../../shared/credit.ts';
import type { Sql } from '../../shared/db/client.ts';
import { type AssetRiskRow, assetRiskMap } from '../../shared/db/queries/assets.ts';
import type { AnalyticsBackend } from './backend.ts';
import { limits } from './limits.ts';
import { ensurePartitions } from './setup.ts';

export const ingestLimits = {
  transferIdLookback: 10_000n,
  decisionLookbackS: 3_600,
} as const;

export interface IngestDeps {
  /** The financial database (read). */
  financial: Sql;
  /** The analytics store (write). */
  analytics: Sql;
  backend: AnalyticsBackend;
  rowsPerBatch?: number;
  rowsPerRunMax?: number;
  /**
   * Rows older than this are past the retention and not copied (a re-read would bring back what
   * retention dropped). Default: all.
   */
  retainFrom?: Date;
}

async function watermark(sql: Sql, source: string): Promise<string | null> {
  const [row] = await sql<
    { last_id: string }[]
  >`select last_id from analytics.watermarks where source = ${source}`;
  return row?.last_id ?? null;
}

async function setWatermark(sql: Sql, source: string, lastId: string): Promise<void> {
  await sql`insert into analytics.watermarks (source, last_id) values (${source}, ${lastId})
    on conflict (source) do update set last_id = excluded.last_id, updated_at = now()`;
}

function retained<T extends { at: Date }>(rows: readonly T[], retainFrom: Date | undefined): readonly T[] {
  return retainFrom === undefined ? rows : rows.filter((r) => r.at.getTime() >= retainFrom.getTime());
}

function span(rows: readonly { at: Date }[]): [number, number] {
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (const r of rows) {
    min = Math.min(min, r.at.getTime());
    max = Math.max(max, r.at.getTime());
  }
  return [min, max];
}

/** Copies new capture and refund movements. Returns rows read. */
export async function ingestCardSpend(deps: IngestDeps): Promise<number> {
  const { financial, analytics, backend } = deps;
  const batch = deps.rowsPerBatch ?? limits.ingestRowsPerBatch;
  const runMax = deps.rowsPerRunMax ?? limits.ingestRowsPerRunMax;
  const last = BigInt((await watermark(analytics, 'card_spend')) ?? '0');
  let after = last > ingestLimits.transferIdLookback ? last - ingestLimits.transferIdLookback : 0n;
  let highest = last;
  let read = 0;
  while (read < runMax) {
    const rows = await financial<
      {
        transfer_id: string;
        at: Date;
        user_id: string;
        authorization_id: string | null;
        transaction_id: string | null;
        kind: string;
        amount_cents: string;
        mcc: string;
      }[]
    >`
      select t.id::text as transfer_id,
        coalesce(to_timestamp(ce.object_created_s), t.created_at) as at,
        t.user_id::text, t.authorization_id, ce.object_id as transaction_id, t.kind, e.amount_cents::text,
        coalesce(a.merchant_category_code, ce.merchant_category_code, 'unknown') as mcc
      from ledger_transfers t
      join ledger_entries e on e.transfer_id = t.id and e.account = 'user_unsettled'
      left join authorizations a on a.id = t.authorization_id
      left join card_event_facts ce on t.ref like 'lifecycle:%' and ce.id = substr(t.ref, 11)
      where t.kind in ('capture', 'refund') and t.user_id is not null and t.id > ${after.toString()}
      order by t.id limit ${batch}`;
    if (rows.length === 0) break;
    read += rows.length;
    const kept = retained(rows, deps.retainFrom);
    if (kept.length > 0) {
      const [from, to] = span(kept);
      await ensurePartitions(analytics, backend, 'card_spend', from, to);
      await analytics`insert into analytics.card_spend ${analytics(
        kept.map((r) => ({
          occurred_at: r.at,
          transfer_id: r.transfer_id,
          user_id: r.user_id,
          authorization_id: r.authorization_id,
          transaction_id: r.transaction_id,
          kind: r.kind,
          amount_cents: r.amount_cents,
          merchant_category_code: r.mcc,
        })),
      )} on conflict do nothing`;
    }
    after = BigInt(rows[rows.length - 1]!.transfer_id);
    if (after > highest) highest = after;
    await setWatermark(analytics, 'card_spend', highest.toString());
    if (rows.length < batch) break;
  }
  return read;
}

/** Copies decisions made since the watermark (minus the lookback). Returns rows read. */
export async function ingestDecisions(deps: IngestDeps): Promise<number> {
  const { financial, analytics, backend } = deps;
  const batch = deps.rowsPerBatch ?? limits.ingestRowsPerBatch;
  const runMax = deps.rowsPerRunMax ?? limits.ingestRowsPerRunMax;
  const lastMs = Number((await watermark(analytics, 'decisions')) ?? '0');
  const fromMs = Math.max(0, lastMs - ingestLimits.decisionLookbackS * 1000, deps.retainFrom?.getTime() ?? 0);
  let cursor = { at: new Date(fromMs), id: '' };
  let highestMs = lastMs;
  let read = 0;
  while (read < runMax) {
    const rows = await financial<
      {
        id: string;
        at: Date;
        user_id: string | null;
        approved: boolean;
        reason: string;
        requested_cents: string;
        approved_cents: string;
        source: string;
      }[]
    >`
      select id, decided_at as at, user_id::text, approved, reason, requested_cents::text, approved_cents::text, source
      from decisions where (decided_at, id) > (${cursor.at}, ${cursor.id})
      order by decided_at, id limit ${batch}`;
    if (rows.length === 0) break;
    read += rows.length;
    const [from, to] = span(rows);
    await ensurePartitions(analytics, backend, 'decisions', from, to);
    await analytics`insert into analytics.decisions ${analytics(
      rows.map((r) => ({
        decided_at: r.at,
        decision_id: r.id,
        user_id: r.user_id,
        approved: r.approved,
        reason: r.reason,
        requested_cents: r.requested_cents,
        approved_cents: r.approved_cents,
        source: r.source,
      })),
    )} on conflict do nothing`;
    const lastRow = rows[rows.length - 1]!;
    cursor = { at: lastRow.at, id: lastRow.id };
    highestMs = Math.max(highestMs, to);
    await setWatermark(analytics, 'decisions', String(highestMs));
    if (rows.length < batch) break;
  }
  return read;
}

/** Takes one snapshot of every user's risk and every open hold at `takenAt`. Returns users snapshotted. */
export async function snapshotRisk(deps: IngestDeps, takenAt: Date): Promise<number> {
  const { financial, analytics, backend } = deps;
  const perBatch = limits.riskUsersPerBatch;
  await ensurePartitions(analytics, backend, 'risk_snapshots', takenAt.getTime(), takenAt.getTime());
  await ensurePartitions(analytics, backend, 'hold_snapshots', takenAt.getTime(), takenAt.getTime());
  const assets = assetRiskMap(
    await financial<
      AssetRiskRow[]
    >`select id, token_decimals, price_decimals, ltv_bps, liquidation_threshold_bps, price_age_max_s from assets where enabled`,
  );
  const priceRows = await financial<{ asset_id: string; answer: string; updated_at: Date }[]>`
    select distinct on (asset_id) asset_id, answer::text, updated_at from prices order by asset_id, updated_at desc`;
  const prices = new Map<string, PriceQuote>(
    priceRows.map((p) => [
      p.asset_id,
      { answer: BigInt(p.answer), updatedAtS: Math.floor(p.updated_at.getTime() / 1000) },
    ]),
  );
  const nowS = Math.floor(takenAt.getTime() / 1000);
  let after = '00000000-0000-0000-0000-000000000000';
  let users = 0;
  for (;;) {
    const accounts = await financial<
      { user_id: string; credit_limit_cents: string; debt: string; unsettled: string; holds: string }[]
    >`
      select c.user_id::text, u.credit_limit_cents::text, c.debt_onchain_usdc::text as debt,
        c.unsettled_cents::text as unsettled, c.holds_cents::text as holds
      from credit_accounts c join users u on u.id = c.user_id
      where c.user_id > ${after}::uuid order by c.user_id limit ${perBatch}`;
    if (accounts.length === 0) break;
    const ids = accounts.map((a) => a.user_id);
    const positions = await financial<{ user_id: string; asset_id: string; c: string; w: string }[]>`
      select user_id::text, asset_id, collateral_base::text as c, pending_withdrawal_base::text as w
      from positions where user_id = any(${ids}::uuid[])`;
    const rows = accounts.map((a) => {
      const credit = computeCredit({
        holdings: positions
          .filter((p) => p.user_id === a.user_id)
          .map((p) => ({ assetId: p.asset_id, amountBase: BigInt(p.c), pendingWithdrawalBase: BigInt(p.w) })),
        assets,
        prices,
        nowS,
        debtOnchainUsdc: BigInt(a.debt),
        unsettledCents: BigInt(a.unsettled),
        holdsCents: BigInt(a.holds),
        creditLimitCents: BigInt(a.credit_limit_cents),
      });
      return {
        taken_at: takenAt,
        user_id: a.user_id,
        collateral_value_cents: credit.collateralValueCents.toString(),
        threshold_value_cents: credit.thresholdValueCents.toString(),
        debt_cents: (credit.debtOnchainCents + BigInt(a.unsettled) + BigInt(a.holds)).toString(),
        available_cents: credit.availableCents.toString(),
        health_factor_wad: credit.healthFactorWad?.toString() ?? null,
      };
    });
    await analytics`insert into analytics.risk_snapshots ${analytics(rows)} on conflict do nothing`;
    users += rows.length;
    after = ids[ids.length - 1]!;
  }
  let afterHold = '';
  for (;;) {
    const holds = await financial<
      { id: string; user_id: string; held_cents: string; created_at: Date; expires_at: Date | null }[]
    >`
      select id, user_id::text, held_cents::text, created_at, expires_at from authorizations
      where held_cents > 0 and status = 'pending' and user_id is not null and id > ${afterHold}
      order by id limit ${perBatch}`;
    if (holds.length === 0) break;
    await analytics`insert into analytics.hold_snapshots ${analytics(
      holds.map((h) => ({
        taken_at: takenAt,
        authorization_id: h.id,
        user_id: h.user_id,
        held_cents: h.held_cents,
        authorized_at: h.created_at,
        expires_at: h.expires_at,
      })),
    )} on conflict do nothing`;
    afterHold = holds[holds.length - 1]!.id;
  }
  await analytics`insert into analytics.snapshots (taken_at) values (${takenAt}) on conflict do nothing`;
  return users;
}
