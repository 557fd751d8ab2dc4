/**
 * The liquidator service (`npm run start:liquidator`): finds vault accounts whose on-chain debt is no
 * longer covered at the liquidation threshold (health factor below 1, ARCHITECTURE.md invariant 8) and
 * liquidates them through the vault's `liquidate`, from the liquidator's own key, paying USDC.
 *
 * - Health is judged on the chain's own numbers for the account (`debtOf`, `collateralOf`, pending
 *   withdrawals included: they are still seizable) and the indexed prices in force, with the credit
 *   model's arithmetic. A held asset whose price is stale is never a reason to liquidate: the account is
 *   skipped (and logged) until the feed answers again.
 * - How much (Aave v3): the whole debt, or half of it when the debt is at least $2,000 and the health
 *   factor is at least 0.95; collateral seized = covered × (1 + bonus) at the price, floored, from the
 *   asset worth the most, cut (with the covered debt) to what the account holds.
 * - Exactly once: a `liquidations` row with the signed transaction's hash and nonce is written before
 *   the broadcast, and at most one is in flight (`sent`, or `mined` and not yet deep) per user (a
 *   partial unique index), whose user the scan skips. A row is followed each round (reconcile.ts) until
 *   its receipt is CHAIN_CONFIRMATIONS deep: only then is it `confirmed`; and re-read while its block is
 *   within REORG_DEPTH_MAX. A receipt a reorg dropped sends the row back to `sent`, in flight again (it
 *   may be re-mined); a transaction that vanished is failed and its nonce reused by the next send, so
 *   the lost one and its replacement can never both be mined.
 *   Each new liquidation is decided on fresh on-chain state, so a mined one is never repeated for the
 *   same shortfall.
 * - Fee cap: as the settlement worker (CHAIN_MAX_FEE_PER_GAS_GWEI), with its own gauge.
 * - Warning: accounts below the warning line (HEALTH_FACTOR_WARNING_BPS, default 1.10) but not yet
 *   below 1 are counted in `liquidator_health_warning_accounts` at each scan and logged; the user's
 *   notice is the Supabase projection's `health_notice` (supabase/sync/projection-read.ts), computed
 *   from the same line. The card's credit needs nothing from this service: below a health factor of
 *   1 the credit model itself leaves nothing available (docs/chain.md, "Liquidator").
 */
import assert from 'node:assert/strict';
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { type Address, encodeFunctionData, type Hex, type LocalAccount, type PublicClient } from 'viem';
import { type ContractsFile, credanaVaultAbi } from '../shared/chain/contracts/index.ts';
import { createFeeCap } from '../shared/chain/fees.ts';
import { assertChainSettings } from '../shared/chain/limits.ts';
import { createLockStatus, runLockedLoop } from '../shared/chain/locked-loop.ts';
import { chainFinalityBlocks } from '../shared/config.ts';
import { type AssetRisk, borrowPower, type PriceQuote } from '../shared/credit.ts';
import { LOCK_LIQUIDATOR_SESSION } from '../shared/db/locks.ts';
import { loadAssets, pricesInForce, vaultAccountsOf } from '../shared/db/queries/chain.ts';
import { BPS, healthFactorWadFloor, usdcToCentsCeil } from '../shared/money.ts';
import { createSleeper } from '../shared/sleeper.ts';
import { LIQUIDATOR_LIMITS } from './limits.ts';
import { createLiquidatorMetrics, type LiquidatorMetrics } from './metrics.ts';
import { createLiquidatorReconcile } from './reconcile.ts';
import { createLiquidatorSigner, type LiquidatorSigner } from './transactions.ts';

const WAD = 10n ** 18n;
const USDC_UNIT = 1_000_000n;
const MAX_UINT256 = 2n ** 256n - 1n;

export interface LiquidatorOptions {
  sql: postgres.Sql;
  client: PublicClient;
  account: LocalAccount;
  contracts: ContractsFile;
  logger: Logger;
  maxFeePerGasWei: bigint;
  /**
   * CHAIN_CONFIRMATIONS: a liquidation is `confirmed` once its receipt is this deep, and followed (its
   * user not judged again) until then. Default: the chain's finality depth, as the config's default.
   */
  confirmations?: number;
  /**
   * REORG_DEPTH_MAX: a confirmed liquidation is re-read while its block is this close to the head (a
   * reorg deeper than the confirmations; the indexer undoes reorgs this deep). Default as the config's.
   */
  reorgDepthMax?: number;
  /** The warning line in basis points of 1 (config HEALTH_FACTOR_WARNING_BPS); default 11000. */
  healthWarningBps?: number;
  metrics?: LiquidatorMetrics;
  resendAfterMs?: number;
  pollIntervalMs?: number;
  nowS?: () => number;
  /** Fault injection for crash tests: runs right after the node accepted a liquidation. */
  afterBroadcast?: (hash: Hex) => void | Promise<void>;
}

export interface LiquidatorReport {
  checked: number;
  /** Below the warning line, not below 1. */
  warnings: number;
  unhealthy: number;
  sent: number;
  /** Rows confirmed this round: their receipt reached CHAIN_CONFIRMATIONS deep. */
  confirmed: number;
  failed: number;
  /** Mined (or confirmed) rows whose block a reorg dropped: back to `sent`. */
  orphaned: number;
  feeCapped: boolean;
}

function newReport(): LiquidatorReport {
  return {
    checked: 0,
    warnings: 0,
    unhealthy: 0,
    sent: 0,
    confirmed: 0,
    failed: 0,
    orphaned: 0,
    feeCapped: false,
  };
}

export interface LiquidationPlan {
  assetId: string;
  token: Address;
  collateralSeizedBase: bigint;
  debtCoveredUsdc: bigint;
  healthFactorWad: bigint;
}

interface AccountState {
  debtUsdc: bigint;
  collateral: Map<string, bigint>;
}

/**
 * The account's health factor (WAD) on its on-chain numbers: null without debt, 'stale' when a held
 * asset's price cannot be used. Pure.
 */
export function accountHealthWad(
  state: AccountState,
  assets: readonly AssetRisk[],
  prices: ReadonlyMap<string, PriceQuote>,
  nowS: number,
): bigint | 'stale' | null {
  if (state.debtUsdc === 0n) return null;
  const holdings = [...state.collateral.entries()]
    .filter(([, amount]) => amount > 0n)
    .map(([assetId, amountBase]) => ({ assetId, amountBase, pendingWithdrawalBase: 0n }));
  const power = borrowPower({ holdings, assets: new Map(assets.map((a) => [a.assetId, a])), prices, nowS });
  if (power.staleAssetIds.length > 0) return 'stale';
  return healthFactorWadFloor(power.thresholdValueCents, usdcToCentsCeil(state.debtUsdc)) ?? MAX_UINT256;
}

/**
 * What to liquidate, or null when the account is healthy (or cannot be judged: a stale price).
 * Exported for its own tests; pure.
 */
export function planLiquidation(
  state: AccountState,
  assets: readonly (AssetRisk & { token: Address })[],
  prices: ReadonlyMap<string, PriceQuote>,
  nowS: number,
): LiquidationPlan | 'stale' | null {
  const hf = accountHealthWad(state, assets, prices, nowS);
  if (hf === null || hf === 'stale') return hf;
  if (hf >= WAD) return null;
  const risk = new Map(assets.map((a) => [a.assetId, a]));
  const holdings = [...state.collateral.entries()]
    .filter(([, amount]) => amount > 0n)
    .map(([assetId, amountBase]) => ({ assetId, amountBase }));
  // The asset worth the most is seized from.
  let best: { asset: AssetRisk & { token: Address }; amount: bigint; price: bigint; value: bigint } | null =
    null;
  for (const h of holdings) {
    const asset = risk.get(h.assetId);
    const price = prices.get(h.assetId)?.answer;
    if (asset === undefined || price === undefined) continue;
    const value = (h.amountBase * price) / 10n ** BigInt(asset.tokenDecimals + asset.priceDecimals);
    if (best === null || value > best.value) best = { asset, amount: h.amountBase, price, value };
  }
  if (best === null) return null;
  const halve =
    state.debtUsdc >= LIQUIDATOR_LIMITS.liquidationCloseFactorDebtMinUsdc &&
    hf >= LIQUIDATOR_LIMITS.liquidationCloseFactorHfMinWad;
  let covered = halve
    ? (state.debtUsdc * BigInt(LIQUIDATOR_LIMITS.liquidationCloseFactorBps)) / BPS
    : state.debtUsdc;
  const bonus = BPS + BigInt(LIQUIDATOR_LIMITS.liquidationBonusBps);
  const scale = 10n ** BigInt(best.asset.tokenDecimals + best.asset.priceDecimals);
  let seized = (covered * scale * bonus) / (best.price * USDC_UNIT * BPS);
  if (seized > best.amount) {
    // Not enough of it: take all of it, and cover only what it pays for at the bonus (floored).
    seized = best.amount;
    covered = (seized * best.price * USDC_UNIT * BPS) / (scale * bonus);
  }
  if (seized === 0n || covered === 0n) return null;
  return {
    assetId: best.asset.assetId,
    token: best.asset.token,
    collateralSeizedBase: seized,
    debtCoveredUsdc: covered,
    healthFactorWad: hf,
  };
}

export interface Liquidator {
  /** True while run() holds the chain's session lock (asked of Postgres; for /readyz). */
  lockHeld(): Promise<boolean>;
  runOnce(): Promise<LiquidatorReport>;
  run(): Promise<void>;
  stop(): Promise<void>;
  readonly metrics: LiquidatorMetrics;
}

export function createLiquidator(options: LiquidatorOptions): Liquidator {
  const { sql, client, account, contracts, logger } = options;
  const vault = contracts.vault;
  const chainId = contracts.chainId;
  const metrics = options.metrics ?? createLiquidatorMetrics();
  const resendAfterMs = options.resendAfterMs ?? LIQUIDATOR_LIMITS.liquidationResendAfterMs;
  const pollIntervalMs = options.pollIntervalMs ?? LIQUIDATOR_LIMITS.liquidationPollIntervalMs;
  const healthWarningBps = options.healthWarningBps ?? 11_000;
  assert(healthWarningBps > 10_000, 'the health-factor warning line must be above 1');
  const warningWad = (WAD * BigInt(healthWarningBps)) / BPS;
  const feeCap = createFeeCap({
    client,
    maxFeePerGasWei: options.maxFeePerGasWei,
    logger,
    aboveCap: metrics.feeAboveCap,
    waits: metrics.feeCapWaits,
    what: 'liquidation',
  });
  let stopping = false;
  const { sleep, wake } = createSleeper();
  const signer = createLiquidatorSigner({ client, account, contracts, feeCap });
  const confirmations = options.confirmations ?? chainFinalityBlocks(chainId);
  const reorgDepthMax = options.reorgDepthMax ?? Math.max(64, chainFinalityBlocks(chainId));
  assertChainSettings({ confirmations, reorgDepthMax });
  const { reconcile, settle } = createLiquidatorReconcile({
    sql,
    client,
    account,
    chainId,
    resendAfterMs,
    confirmations,
    reorgDepthMax,
    metrics,
    logger,
    reusable: signer.reusable,
    resetNonce: signer.resetNonce,
  });

  const readAccount = (who: Address, assets: readonly { assetId: string; token: Address }[]) =>
    readVaultAccount(client, vault, who, assets);
  const deps: AccountLiquidationDeps = {
    sql,
    client,
    vault,
    chainId,
    warningWad,
    metrics,
    logger,
    signer,
    readAccount,
    settle,
    afterBroadcast: options.afterBroadcast,
  };

  const runOnce = async (): Promise<LiquidatorReport> => {
    const report = newReport();
    // Reconcile first: a liquidation a reorg dropped is back in flight before any account is judged.
    await reconcile(report);
    const candidates = await sql<{ user_id: string }[]>`
      select c.user_id::text from credit_accounts c
      where c.debt_onchain_usdc > 0 and not exists (
        select 1 from liquidations l where l.chain_id = ${chainId} and l.user_id = c.user_id
          and l.status in ('sent', 'mined'))
      order by c.user_id limit ${LIQUIDATOR_LIMITS.liquidationUsersPerScanMax}`;
    if (candidates.length === 0) {
      metrics.unhealthy.set(0);
      metrics.warnings.set(0);
      return report;
    }
    const [rows, accounts] = await Promise.all([
      loadAssets(sql, chainId),
      vaultAccountsOf(
        sql,
        chainId,
        candidates.map((c) => c.user_id),
      ),
    ]);
    const market = await marketOf(sql, rows);
    const nowS = options.nowS?.() ?? Math.floor(Date.now() / 1000);
    for (const { user_id: userId } of candidates) {
      await liquidateAccount(deps, { userId, who: accounts.get(userId) }, market, nowS, report);
    }
    metrics.unhealthy.set(report.unhealthy);
    metrics.warnings.set(report.warnings);
    return report;
  };

  let running: Promise<void> | null = null;
  const lock = createLockStatus();
  return {
    lockHeld: () => lock.held(),
    metrics,
    runOnce,
    run() {
      if (running !== null) return running;
      // One liquidator per chain: two would each decide on the same shortfall.
      running = runLockedLoop({
        sql,
        lock: LOCK_LIQUIDATOR_SESSION,
        chainId: chainId,
        holder: 'liquidator',
        round: runOnce,
        stopping: () => stopping,
        sleep,
        pollIntervalMs,
        logger,
        status: lock,
      });
      return running;
    },
    async stop() {
      stopping = true;
      wake();
      if (running !== null) await running.catch(() => {});
    },
  };
}

/** What one scan judges accounts against: the chain's assets (risk parameters) and the prices in force. */
async function marketOf(sql: postgres.Sql, rows: Awaited<ReturnType<typeof loadAssets>>) {
  const assets = rows.map((a) => ({
    assetId: a.assetId,
    token: a.token,
    tokenDecimals: a.tokenDecimals,
    priceDecimals: a.priceDecimals,
    ltvBps: a.ltvBps,
    liquidationThresholdBps: a.liquidationThresholdBps,
    priceAgeMaxS: a.priceAgeMaxS,
  }));
  const prices = new Map<string, PriceQuote>(
    [
      ...(
        await pricesInForce(
          sql,
          rows.map((a) => a.assetId),
        )
      ).entries(),
    ].map(([id, p]) => [id, { answer: p.answer, updatedAtS: Number(p.updatedAtS) }]),
  );
  return { assets, prices };
}

interface AccountLiquidationDeps {
  sql: postgres.Sql;
  client: PublicClient;
  vault: Address;
  chainId: number;
  warningWad: bigint;
  metrics: LiquidatorMetrics;
  logger: Logger;
  signer: LiquidatorSigner;
  readAccount: (
    who: Address,
    assets: readonly { assetId: string; token: Address }[],
  ) => Promise<AccountState>;
  /** Records a fresh receipt (reconcile.ts): mined, or confirmed/failed once deep. */
  settle: ReturnType<typeof createLiquidatorReconcile>['settle'];
  afterBroadcast?: ((hash: Hex) => void | Promise<void>) | undefined;
}

/**
 * Judges one account on fresh on-chain state and, when it is below a health factor of 1 and its prices
 * are fresh, liquidates it: signed, SAVED as `sent`, broadcast, then followed to its receipt (`mined`,
 * or `confirmed`/`failed` when already CHAIN_CONFIRMATIONS deep; reconcile follows it from there).
 */
async function liquidateAccount(
  deps: AccountLiquidationDeps,
  { userId, who }: { userId: string; who: Address | undefined },
  market: Awaited<ReturnType<typeof marketOf>>,
  nowS: number,
  report: LiquidatorReport,
): Promise<void> {
  const { sql, client, vault, chainId, warningWad, metrics, logger, signer, readAccount } = deps;
  const { assets, prices } = market;
  const options = { afterBroadcast: deps.afterBroadcast };
  if (who === undefined) return;
  report.checked++;
  const state = await readAccount(who, assets);
  const hf = accountHealthWad(state, assets, prices, nowS);
  if (typeof hf === 'bigint' && hf >= WAD && hf < warningWad) {
    report.warnings++;
    logger.warn({ userId, healthFactorWad: hf.toString() }, 'health factor below the warning line');
  }
  const plan = planLiquidation(state, assets, prices, nowS);
  if (plan === null) return;
  if (plan === 'stale') {
    metrics.staleSkipped.inc();
    logger.warn({ userId }, 'account not judged: a held asset has a stale price');
    return;
  }
  report.unhealthy++;
  if (report.feeCapped || !(await signer.ensureAllowance())) {
    report.feeCapped = true;
    return;
  }
  const nonce = await signer.takeNonce();
  const signed = await signer.sign(
    vault,
    encodeFunctionData({
      abi: credanaVaultAbi,
      functionName: 'liquidate',
      args: [who, plan.token, plan.collateralSeizedBase, plan.debtCoveredUsdc],
    }),
    nonce,
    300_000n,
  );
  if (signed === null) {
    signer.reusable.unshift(nonce);
    report.feeCapped = true;
    return;
  }
  // Saved before the broadcast: a crash from here on leaves a row naming the transaction.
  await sql`
    insert into liquidations (chain_id, user_id, account, asset_id, collateral_seized_base, debt_covered_usdc,
      health_factor_wad, status, transaction_hash, nonce)
    values (${chainId}, ${userId}, ${who}, ${plan.assetId}, ${plan.collateralSeizedBase.toString()},
      ${plan.debtCoveredUsdc.toString()}, ${plan.healthFactorWad.toString()}, 'sent', ${signed.hash}, ${nonce})`;
  try {
    await client.sendRawTransaction({ serializedTransaction: signed.serialized });
  } catch (error) {
    signer.resetNonce();
    await sql`update liquidations set status = 'failed', last_error = 'refused by the node', updated_at = now()
      where transaction_hash = ${signed.hash} and status = 'sent'`;
    logger.error({ err: error, userId }, 'liquidation refused by the node');
    return;
  }
  metrics.liquidations.inc();
  report.sent++;
  await options.afterBroadcast?.(signed.hash);
  logger.info(
    {
      userId,
      account: who,
      assetId: plan.assetId,
      seized: plan.collateralSeizedBase.toString(),
      coveredUsdc: plan.debtCoveredUsdc.toString(),
      hash: signed.hash,
    },
    'liquidation broadcast',
  );
  const receipt = await client
    .waitForTransactionReceipt({ hash: signed.hash, pollingInterval: 100, timeout: 30_000 })
    .catch(() => null);
  if (receipt === null) return;
  const [row] = await sql<{ id: string; status: 'sent' | 'mined' }[]>`
    select id::text, status from liquidations where transaction_hash = ${signed.hash} and status in ('sent', 'mined')`;
  if (row === undefined) return;
  const head = await client.getBlockNumber({ cacheTime: 0 });
  await deps.settle({ ...row, transaction_hash: signed.hash }, receipt, head, report);
}

/** The chain's own numbers for a vault account: its debt and its collateral in each asset. */
async function readVaultAccount(
  client: PublicClient,
  vault: Address,
  who: Address,
  assets: readonly { assetId: string; token: Address }[],
): Promise<AccountState> {
  const [debt, ...amounts] = await Promise.all([
    client.readContract({ address: vault, abi: credanaVaultAbi, functionName: 'debtOf', args: [who] }),
    ...assets.map((a) =>
      client.readContract({
        address: vault,
        abi: credanaVaultAbi,
        functionName: 'collateralOf',
        args: [who, a.token],
      }),
    ),
  ]);
  return {
    debtUsdc: debt as bigint,
    collateral: new Map(assets.map((a, i) => [a.assetId, amounts[i] as bigint])),
  };
}
