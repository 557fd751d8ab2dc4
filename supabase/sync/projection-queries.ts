/**
 * The financial database's rows behind the dashboard projection (projection-read.ts), read inside the
 * caller's repeatable-read snapshot: the users' accounts, positions, cards and the market, and their most
 * recent activity (at most `perUser` of each source per user).
 */
import type postgres from 'postgres';
import type { AssetRiskRow } from '../../shared/db/queries/assets.ts';
import type { ChainEventNames } from './projection-read.ts';

type Tx = postgres.TransactionSql;
/** The user ids as one array parameter (`tx.array`). */
type Ids = ReturnType<Tx['array']>;

/** Users, credit accounts, positions, cards (newest first), assets and each asset's latest price. */
export function readAccountRows(tx: Tx, ids: Ids) {
  return Promise.all([
    tx<{ id: string; status: string; credit_limit_cents: string }[]>`
      select id, status, credit_limit_cents::text from users where id = any(${ids}::uuid[])`,
    tx<{ user_id: string; debt_onchain_usdc: string; unsettled_cents: string; holds_cents: string }[]>`
      select user_id, debt_onchain_usdc::text, unsettled_cents::text, holds_cents::text
      from credit_accounts where user_id = any(${ids}::uuid[])`,
    tx<{ user_id: string; asset_id: string; collateral_base: string; pending_withdrawal_base: string }[]>`
      select user_id, asset_id, collateral_base::text, pending_withdrawal_base::text
      from positions where user_id = any(${ids}::uuid[])`,
    tx<{ user_id: string; status: string; frozen: boolean }[]>`
      select user_id, status, (frozen or ops_frozen) as frozen from cards where user_id = any(${ids}::uuid[])
      order by created_at desc, id desc`,
    tx<
      (AssetRiskRow & { token_address: string })[]
    >`select id, token_address, token_decimals, price_decimals, ltv_bps, liquidation_threshold_bps, price_age_max_s
      from assets`,
    tx<{ asset_id: string; answer: string; updated_at: Date }[]>`
      select distinct on (asset_id) asset_id, answer::text, updated_at from prices
      order by asset_id, updated_at desc, round_id desc`,
  ]);
}

/** Each user's latest authorizations, capture/refund transfers and collateral/liquidation chain events. */
export function readActivityRows(
  tx: Tx,
  ids: Ids,
  perUser: number,
  names: ChainEventNames,
  liquidationNames: readonly string[],
) {
  return Promise.all([
    tx<
      {
        id: string;
        user_id: string;
        status: string;
        approved: boolean;
        requested_cents: string;
        approved_cents: string;
        decision: string;
        decline_reason: string | null;
        merchant_name_sealed: Buffer | null;
        merchant_category_code: string | null;
        created_at: Date;
      }[]
    >`select a.id, a.user_id, a.status, a.approved, a.requested_cents::text, a.approved_cents::text, a.decision,
        a.decline_reason, a.merchant_name_sealed, a.merchant_category_code, a.created_at
      from unnest(${ids}::uuid[]) as u (id)
      cross join lateral (
        select * from authorizations where user_id = u.id order by created_at desc, id desc limit ${perUser}
      ) as a`,
    tx<
      {
        ref: string;
        kind: 'capture' | 'refund';
        user_id: string;
        authorization_id: string | null;
        amount_cents: string | null;
        merchant_name_sealed: Buffer | null;
        merchant_category_code: string | null;
        created_at: Date;
      }[]
    >`select t.ref, t.kind, t.user_id, t.authorization_id, t.created_at,
        (select abs(sum(e.amount_cents))::text from ledger_entries e
          where e.transfer_id = t.id and e.user_id = t.user_id
            and e.account in ('user_unsettled', 'user_debt_onchain')) as amount_cents,
        a.merchant_name_sealed, a.merchant_category_code
      from unnest(${ids}::uuid[]) as u (id)
      cross join lateral (
        select * from ledger_transfers lt where lt.user_id = u.id and lt.kind in ('capture', 'refund')
        order by lt.created_at desc, lt.id desc limit ${perUser}
      ) as t
      left join authorizations a on a.id = t.authorization_id`,
    tx<
      {
        chain_id: number;
        block_hash: string;
        log_index: number;
        user_id: string;
        event_name: string;
        token: string | null;
        asset_hint: string | null;
        amount: string | null;
        seized: string | null;
        covered_usdc: string | null;
        applied_at: Date | null;
        created_at: Date;
      }[]
    >`select c.chain_id, c.block_hash, c.log_index, c.user_id, c.event_name, c.applied_at, c.created_at,
        lower(coalesce(c.args ->> 'token', c.args ->> 'asset')) as token, c.args ->> 'assetId' as asset_hint,
        c.args ->> 'amount' as amount, c.args ->> 'collateralSeized' as seized,
        c.args ->> 'debtCoveredUsdc' as covered_usdc
      from unnest(${ids}::uuid[]) as u (id)
      cross join lateral (
        select * from chain_events where user_id = u.id
          and event_name = any(${tx.array([...names.deposits, ...names.withdrawals, ...liquidationNames])}::text[])
        order by block_number desc, log_index desc limit ${perUser}
      ) as c`,
  ]);
}
