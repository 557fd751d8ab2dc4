/**
 * Reads what the dashboard shows for a set of users from the financial database (the truth), in one
 * repeatable-read snapshot, and computes the credit numbers with `shared/credit.ts` — the same
 * definition of available credit and health factor that the hot path and the jobs use.
 *
 * Activity sources (all of the financial database's own rows, nothing derived elsewhere):
 * - authorizations → kind 'authorization' with outcome and a user-facing decline message;
 * - ledger transfers of kind capture / refund → their amount is the user's leg on `user_unsettled`
 *   and `user_debt_onchain` (shared/db/queries/ledger.ts's accounts);
 * - chain events named as deposits or withdrawals → asset and amount from the event's args;
 * - the vault's `Liquidated` events → kind 'liquidation': the collateral seized (asset, base units)
 *   and the debt it covered (cents, floored).
 *
 * The health notice (issue 14): 'liquidation' below a health factor of 1 (the credit model leaves no
 * credit there, and the liquidator takes the position), 'warning' below the warning line
 * (HEALTH_FACTOR_WARNING_BPS), null otherwise — and null while a held asset's price is stale: the
 * liquidator never acts on a stale price, and `stale_asset_ids` tells the user why credit is gone.
 */

import { computeCredit, type PriceQuote } from '../../shared/credit.ts';
import type { Sql } from '../../shared/db/client.ts';
import { assetRiskMap } from '../../shared/db/queries/assets.ts';
import type { MerchantNames } from '../../shared/hsm/merchant-names.ts';
import { USDC_PER_CENT, WAD } from '../../shared/money.ts';
import { declineMessage } from './decline-messages.ts';
import { readAccountRows, readActivityRows } from './projection-queries.ts';

export interface ChainEventNames {
  deposits: readonly string[];
  withdrawals: readonly string[];
  /** Default: the vault's 'Liquidated'. */
  liquidations?: readonly string[];
}

/** The vault's liquidation event (shared/chain/contracts/CredanaVault.sol). */
export const DEFAULT_LIQUIDATION_EVENT_NAMES: readonly string[] = ['Liquidated'];

/** The warning line when the caller does not say (config HEALTH_FACTOR_WARNING_BPS's default). */
export const HEALTH_WARNING_BPS_DEFAULT = 11_000;

export type HealthNotice = 'warning' | 'liquidation' | null;

/** The notice for a health factor (WAD; null without debt); none while a held price is stale. */
export function healthNotice(
  healthFactorWad: bigint | null,
  stale: boolean,
  warningBps: number = HEALTH_WARNING_BPS_DEFAULT,
): HealthNotice {
  if (healthFactorWad === null || stale) return null;
  if (healthFactorWad < WAD) return 'liquidation';
  return healthFactorWad * 10_000n < WAD * BigInt(warningBps) ? 'warning' : null;
}

/** The vault's event names (indexer/): deposits add collateral, withdrawals (requested or done) remove it. */
export const DEFAULT_CHAIN_EVENT_NAMES: ChainEventNames = {
  deposits: ['Deposited', 'CollateralDeposited', 'Supplied'],
  withdrawals: ['Withdrawn', 'WithdrawalRequested', 'WithdrawalProcessed', 'CollateralWithdrawn'],
};

export type CardStatus = 'none' | 'active' | 'frozen' | 'inactive' | 'canceled';

export interface SummaryRow {
  user_id: string;
  account_status: string;
  card_status: CardStatus;
  collateral_value_cents: string;
  borrow_power_cents: string;
  credit_limit_cents: string;
  debt_onchain_cents: string;
  unsettled_cents: string;
  holds_cents: string;
  available_cents: string;
  health_factor: string | null;
  health_notice: HealthNotice;
  stale_asset_ids: string[];
  as_of: string;
}

export interface ActivityRow {
  id: string;
  user_id: string;
  kind: 'authorization' | 'capture' | 'refund' | 'deposit' | 'withdrawal' | 'liquidation';
  status: string;
  outcome: 'approved' | 'partial' | 'declined' | null;
  amount_cents: string | null;
  asset_id: string | null;
  amount_base: string | null;
  merchant_name: string | null;
  merchant_category_code: string | null;
  authorization_id: string | null;
  decline_code: string | null;
  decline_message: string | null;
  occurred_at: string;
}

export interface Truth {
  /** The financial database's `now()` of the snapshot. */
  asOf: Date;
  /** Users that exist in the financial database (the others of the request are absent). */
  summaries: SummaryRow[];
  /** Each user's most recent activity, newest first, at most `activityPerUserMax` per user. */
  activity: ActivityRow[];
}

export interface ReadTruthOptions {
  activityPerUserMax: number;
  chainEventNames?: ChainEventNames;
  /** The health-factor warning line in basis points of 1 (config HEALTH_FACTOR_WARNING_BPS). */
  healthWarningBps?: number;
  /**
   * Opens the sealed merchant names (shared/hsm/merchant-names.ts). Absent, or unable to open one now,
   * the activity shows no merchant name; the periodic sweep writes it once it opens.
   */
  merchantNames?: MerchantNames | null;
}

/** `1.234…` with 18 decimals, exact (the health factor is a WAD). */
export function wadToDecimal(wad: bigint): string {
  return `${wad / WAD}.${(wad % WAD).toString().padStart(18, '0')}`;
}

function cardStatus(cards: readonly { status: string; frozen: boolean }[]): CardStatus {
  // Cards come newest first; the newest active card is the one the user pays with.
  const card = cards.find((c) => c.status === 'active') ?? cards[0];
  if (card === undefined) return 'none';
  if (card.status === 'active') return card.frozen ? 'frozen' : 'active';
  return card.status === 'inactive' ? 'inactive' : 'canceled';
}

/**
 * The dashboard's truth for `userIds`, from one repeatable-read snapshot of the financial database (see
 * the header): the rows (projection-queries.ts), then the summaries and the activity computed from them.
 */
export async function readTruth(
  financial: Sql,
  userIds: readonly string[],
  options: ReadTruthOptions,
): Promise<Truth> {
  const names = options.chainEventNames ?? DEFAULT_CHAIN_EVENT_NAMES;
  const liquidationNames = names.liquidations ?? DEFAULT_LIQUIDATION_EVENT_NAMES;
  const perUser = options.activityPerUserMax;
  return financial.begin('isolation level repeatable read read only', async (tx) => {
    const [clock] = await tx<{ now: Date }[]>`select now() as now`;
    const asOf = clock!.now;
    const ids = tx.array([...userIds]);
    const [[users, accounts, positions, cards, assets, prices], [authorizations, transfers, chain]] =
      await Promise.all([
        readAccountRows(tx, ids),
        readActivityRows(tx, ids, perUser, names, liquidationNames),
      ]);
    const summaries = summaryRows({ users, accounts, positions, cards, assets, prices }, asOf, options);
    const activity = await activityRows(
      { authorizations, transfers, chain },
      { ...options, names, liquidationNames, assets },
    );
    return { asOf, summaries, activity };
  });
}

type AccountRows = Awaited<ReturnType<typeof readAccountRows>>;
type ActivityRows = Awaited<ReturnType<typeof readActivityRows>>;
/** The rows of one query as a plain array (what a test can build). */
type Rows<T extends readonly unknown[]> = readonly T[number][];

/** Each user's summary: the credit numbers from `shared/credit.ts` over the snapshot's rows, as of `asOf`. */
export function summaryRows(
  rows: {
    users: Rows<AccountRows[0]>;
    accounts: Rows<AccountRows[1]>;
    positions: Rows<AccountRows[2]>;
    cards: Rows<AccountRows[3]>;
    assets: Rows<AccountRows[4]>;
    prices: Rows<AccountRows[5]>;
  },
  asOf: Date,
  options: Pick<ReadTruthOptions, 'healthWarningBps'>,
): SummaryRow[] {
  const { users, accounts, positions, cards, assets, prices } = rows;
  const nowS = Math.floor(asOf.getTime() / 1000);
  const assetRisk = assetRiskMap(assets);
  const quotes = new Map<string, PriceQuote>(
    prices.map((p) => [
      p.asset_id,
      { answer: BigInt(p.answer), updatedAtS: Math.floor(p.updated_at.getTime() / 1000) },
    ]),
  );
  const accountByUser = new Map(accounts.map((a) => [a.user_id, a]));

  return users.map((user) => {
    const account = accountByUser.get(user.id);
    const credit = computeCredit({
      holdings: positions
        .filter((p) => p.user_id === user.id)
        .map((p) => ({
          assetId: p.asset_id,
          amountBase: BigInt(p.collateral_base),
          pendingWithdrawalBase: BigInt(p.pending_withdrawal_base),
        })),
      assets: assetRisk,
      prices: quotes,
      nowS,
      debtOnchainUsdc: BigInt(account?.debt_onchain_usdc ?? '0'),
      unsettledCents: BigInt(account?.unsettled_cents ?? '0'),
      holdsCents: BigInt(account?.holds_cents ?? '0'),
      creditLimitCents: BigInt(user.credit_limit_cents),
    });
    return {
      user_id: user.id,
      account_status: user.status,
      card_status: cardStatus(cards.filter((c) => c.user_id === user.id)),
      collateral_value_cents: credit.collateralValueCents.toString(),
      borrow_power_cents: credit.borrowPowerCents.toString(),
      credit_limit_cents: user.credit_limit_cents,
      debt_onchain_cents: credit.debtOnchainCents.toString(),
      unsettled_cents: account?.unsettled_cents ?? '0',
      holds_cents: account?.holds_cents ?? '0',
      available_cents: credit.availableCents.toString(),
      health_factor: credit.healthFactorWad === null ? null : wadToDecimal(credit.healthFactorWad),
      health_notice: healthNotice(
        credit.healthFactorWad,
        credit.staleAssetIds.length > 0,
        options.healthWarningBps,
      ),
      stale_asset_ids: [...credit.staleAssetIds].sort(),
      as_of: asOf.toISOString(),
    };
  });
}

/**
 * The users' activity from the snapshot's rows: authorizations, captures and refunds (with the merchant
 * name opened once per authorization), deposits, withdrawals and liquidations; newest first per user,
 * at most `activityPerUserMax` each.
 */
export async function activityRows(
  rows: {
    authorizations: Rows<ActivityRows[0]>;
    transfers: Rows<ActivityRows[1]>;
    chain: Rows<ActivityRows[2]>;
  },
  options: Pick<ReadTruthOptions, 'activityPerUserMax' | 'merchantNames'> & {
    names: ChainEventNames;
    liquidationNames: readonly string[];
    /** The market's assets, to name a chain event's asset by its token. */
    assets: readonly { id: string; token_address: string }[];
  },
): Promise<ActivityRow[]> {
  const { authorizations, transfers, chain } = rows;
  const { names, liquidationNames, assets } = options;
  const assetByToken = new Map(assets.map((a) => [a.token_address.toLowerCase(), a.id]));
  const perUser = options.activityPerUserMax;
  // Each sealed name opened once (a capture shows its authorization's name too).
  const opened = new Map<string, string | null>();
  const nameOf = async (authorizationId: string | null, sealed: Buffer | null): Promise<string | null> => {
    if (authorizationId === null || sealed === null || !options.merchantNames) return null;
    if (!opened.has(authorizationId))
      opened.set(authorizationId, await options.merchantNames.open(authorizationId, sealed));
    return opened.get(authorizationId) ?? null;
  };
  const items: ActivityRow[] = [];
  for (const a of authorizations) {
    const outcome =
      a.decision === 'stripe'
        ? a.approved
          ? 'approved'
          : 'declined'
        : (a.decision as ActivityRow['outcome']);
    const declined = outcome === 'declined';
    items.push({
      id: `authorization:${a.id}`,
      user_id: a.user_id,
      kind: 'authorization',
      status: a.status,
      outcome,
      amount_cents: a.approved ? a.approved_cents : a.requested_cents,
      asset_id: null,
      amount_base: null,
      merchant_name: await nameOf(a.id, a.merchant_name_sealed),
      merchant_category_code: a.merchant_category_code,
      authorization_id: a.id,
      decline_code: declined ? a.decline_reason : null,
      decline_message: declined ? declineMessage(a.decline_reason) : null,
      occurred_at: a.created_at.toISOString(),
    });
  }
  for (const t of transfers) {
    items.push({
      id: t.ref,
      user_id: t.user_id,
      kind: t.kind,
      status: 'posted',
      outcome: null,
      amount_cents: t.amount_cents ?? '0',
      asset_id: null,
      amount_base: null,
      merchant_name: await nameOf(t.authorization_id, t.merchant_name_sealed),
      merchant_category_code: t.merchant_category_code,
      authorization_id: t.authorization_id,
      decline_code: null,
      decline_message: null,
      occurred_at: t.created_at.toISOString(),
    });
  }
  const digits = (value: string | null) => (value !== null && /^[0-9]{1,78}$/.test(value) ? value : null);
  for (const c of chain) {
    const liquidation = liquidationNames.includes(c.event_name);
    const amount = digits(liquidation ? c.seized : c.amount);
    const coveredUsdc = liquidation ? digits(c.covered_usdc) : null;
    items.push({
      id: `chain:${c.chain_id}:${c.block_hash}:${c.log_index}`,
      user_id: c.user_id,
      kind: liquidation ? 'liquidation' : names.deposits.includes(c.event_name) ? 'deposit' : 'withdrawal',
      status: c.applied_at === null ? 'pending' : 'confirmed',
      outcome: null,
      // The debt the liquidation covered, in cents (USDC has 6 decimals), floored: shown, not booked.
      amount_cents: coveredUsdc === null ? null : (BigInt(coveredUsdc) / USDC_PER_CENT).toString(),
      asset_id: (c.token === null ? undefined : assetByToken.get(c.token)) ?? c.asset_hint,
      amount_base: amount,
      merchant_name: null,
      merchant_category_code: null,
      authorization_id: null,
      decline_code: null,
      decline_message: null,
      occurred_at: c.created_at.toISOString(),
    });
  }
  // Newest first per user, ties by id, then keep the most recent `perUser` of each.
  items.sort((x, y) =>
    x.user_id !== y.user_id
      ? x.user_id.localeCompare(y.user_id)
      : x.occurred_at !== y.occurred_at
        ? y.occurred_at.localeCompare(x.occurred_at)
        : x.id.localeCompare(y.id),
  );
  const kept = new Map<string, number>();
  const activity = items.filter((item) => {
    const n = kept.get(item.user_id) ?? 0;
    kept.set(item.user_id, n + 1);
    return n < perUser;
  });
  return activity;
}
