/**
 * The liquidator service (`npm run start:liquidator`): finds vault accounts whose on-chain debt is no
 * longer covered at the liquidation threshold (health factor below 1, ARCHITECTURE.md invariant 8) and
 * liquidates them through the vault's `liquidate`, from the liquidator's own key, paying USDC.
 *
 * - Health is judged twice. First on the chain's own numbers for the account (`debtOf`, `collateralOf`,
 *   pending withdrawals included: they are still seizable) and the indexed prices in force, with the
 *   credit model's arithmetic. An account unhealthy there is then judged by the vault's own rule, the
 *   one `liquidate` enforces (it reverts `AccountHealthy` otherwise): its numbers and the feeds' answers
 *   read from the chain at one block right before signing, Σ held × answer × the vault's liquidation
 *   threshold in USDC units, floored per asset, below the debt (`planLiquidation`). Only an account
 *   both find unhealthy is liquidated, so a price of a branch a reorg removed, or a drop the indexer has
 *   not yet undone, is not acted on (docs/chaos.md L3). A held asset whose price is stale is never a
 *   reason to liquidate: the account is skipped (and logged) until the feed answers again.
 * - How much (Aave v3): the whole debt, or half of it when the debt is at least $2,000 and the health
 *   factor is at least 0.95; collateral seized = covered × (1 + the vault's bonus) at the feed's answer,
 *   floored, from the asset worth the most, cut (with the covered debt) to what the account holds: the
 *   most the vault lets a covered amount seize (`SeizeTooLarge` beyond it).
 * - The vault is the authority: if the chain moved between the read and the block (a price recovered, a
 *   repayment), the transaction reverts and its row is `failed` (`reverted`); the account is judged
 *   afresh next round.
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
import {
  type ContractsFile,
  credanaVaultAbi,
  priceFeedProxyAbi as priceFeedAbi,
} from '../shared/chain/contracts/index.ts';
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
  /** Below 1 at the indexed prices in force. */
  unhealthy: number;
  /** Of those, healthy by the vault's rule at the chain's state and feed answers: not liquidated. */
  healthyOnChain: number;
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
    healthyOnChain: 0,
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

/** What the vault itself knows of an asset (`collateralConfig`): the terms `liquidate` judges by. */
export interface VaultAsset {
  assetId: string;
  token: Address;
  tokenDecimals: number;
  priceDecimals: number;
  liquidationThresholdBps: bigint;
  priceAgeMaxS: number;
}

/** The chain at one block: the account, the vault's terms, the feeds' answers, the block's time. */
export interface VaultView {
  blockNumber: bigint;
  state: AccountState;
  assets: VaultAsset[];
  prices: Map<string, PriceQuote>;
  nowS: number;
  bonusBps: bigint;
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
 * The vault's `liquidationValueUsdc`, exactly (CredanaVault.sol): Σ held × answer × 1e6 × threshold /
 * (10^tokenDecimals × 10^priceDecimals × 10^4), floored per asset; 'stale' when a held asset's answer is
 * not positive, stamped after `nowS`, or older than its `priceAgeMaxS` (the vault's `PriceUnusable`). Pure.
 */
export function vaultLiquidationValueUsdc(
  state: AccountState,
  assets: readonly VaultAsset[],
  prices: ReadonlyMap<string, PriceQuote>,
  nowS: number,
): bigint | 'stale' {
  let total = 0n;
  for (const asset of assets) {
    const held = state.collateral.get(asset.assetId) ?? 0n;
    if (held === 0n) continue;
    const quote = prices.get(asset.assetId);
    if (
      quote === undefined ||
      quote.answer <= 0n ||
      quote.updatedAtS > nowS ||
      nowS - quote.updatedAtS > asset.priceAgeMaxS
    ) {
      return 'stale';
    }
    total +=
      (held * quote.answer * USDC_UNIT * asset.liquidationThresholdBps) /
      (10n ** BigInt(asset.tokenDecimals + asset.priceDecimals) * BPS);
  }
  return total;
}

/**
 * What to liquidate by the vault's own rule, or null when the vault would find the account healthy
 * (`vaultLiquidationValueUsdc` ≥ debt), or 'stale' when it could not judge it (a held asset's price is
 * unusable). The health factor is value / debt in WAD, floored. Seized collateral is never more than
 * the vault's `SeizeTooLarge` bound for the covered debt. Exported for its own tests; pure.
 */
export function planLiquidation(
  state: AccountState,
  assets: readonly VaultAsset[],
  prices: ReadonlyMap<string, PriceQuote>,
  nowS: number,
  bonusBps: bigint,
): LiquidationPlan | 'stale' | null {
  if (state.debtUsdc === 0n) return null;
  const value = vaultLiquidationValueUsdc(state, assets, prices, nowS);
  if (value === 'stale') return value;
  if (value >= state.debtUsdc) return null;
  const hf = (value * WAD) / state.debtUsdc;
  // The asset worth the most is seized from.
  let best: { asset: VaultAsset; amount: bigint; price: bigint; value: bigint } | null = null;
  for (const asset of assets) {
    const amount = state.collateral.get(asset.assetId) ?? 0n;
    const price = prices.get(asset.assetId)?.answer;
    if (amount === 0n || price === undefined) continue;
    const worth = (amount * price) / 10n ** BigInt(asset.tokenDecimals + asset.priceDecimals);
    if (best === null || worth > best.value) best = { asset, amount, price, value: worth };
  }
  if (best === null) return null;
  const halve =
    state.debtUsdc >= LIQUIDATOR_LIMITS.liquidationCloseFactorDebtMinUsdc &&
    hf >= LIQUIDATOR_LIMITS.liquidationCloseFactorHfMinWad;
  let covered = halve
    ? (state.debtUsdc * BigInt(LIQUIDATOR_LIMITS.liquidationCloseFactorBps)) / BPS
    : state.debtUsdc;
  const bonus = BPS + bonusBps;
  const scale = 10n ** BigInt(best.asset.tokenDecimals + best.asset.priceDecimals);
  // The vault's bound: covered × (1 + bonus) / price, floored.
  const seizeMax = (c: bigint) => (c * bonus * scale) / (best.price * USDC_UNIT * BPS);
  let seized = seizeMax(covered);
  if (seized > best.amount) {
    // Not enough of it: cover only what all of it pays for at the bonus (floored), and seize what that
    // covered amount allows (at most all of it; a few base units may stay behind).
    covered = (best.amount * best.price * USDC_UNIT * BPS) / (scale * bonus);
    seized = seizeMax(covered);
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
  const readView = createVaultViewReader(client, vault);
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
    readView,
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
  /** The chain at one block as `liquidate` will judge it (readVaultView). */
  readView: (who: Address, assets: readonly { assetId: string; token: Address }[]) => Promise<VaultView>;
  /** Records a fresh receipt (reconcile.ts): mined, or confirmed/failed once deep. */
  settle: ReturnType<typeof createLiquidatorReconcile>['settle'];
  afterBroadcast?: ((hash: Hex) => void | Promise<void>) | undefined;
}

/**
 * Judges one account on fresh on-chain state and, when it is below a health factor of 1 at the indexed
 * prices in force AND by the vault's own rule at the chain's state and feed answers read right before
 * signing, with fresh prices, liquidates it: signed, SAVED as `sent`, broadcast, then followed to its
 * receipt (`mined`, or `confirmed`/`failed` when already CHAIN_CONFIRMATIONS deep; reconcile follows it
 * from there). A liquidation the vault refuses at execution (the chain moved since) is `failed`.
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
  if (hf === null || (typeof hf === 'bigint' && hf >= WAD)) return;
  if (hf === 'stale') {
    metrics.staleSkipped.inc();
    logger.warn({ userId }, 'account not judged: a held asset has a stale price');
    return;
  }
  report.unhealthy++;
  if (report.feeCapped || !(await signer.ensureAllowance())) {
    report.feeCapped = true;
    return;
  }
  // The round's prices may be older than the chain (read before a reorg removed them, or before a
  // recovery): plan on the chain as the vault will judge it, read now, at one block.
  const view = await deps.readView(who, assets);
  const plan = planLiquidation(view.state, view.assets, view.prices, view.nowS, view.bonusBps);
  if (plan === 'stale') {
    metrics.staleSkipped.inc();
    logger.warn({ userId }, 'account not judged: a held asset has a stale price on the chain');
    return;
  }
  if (plan === null) {
    report.healthyOnChain++;
    logger.warn(
      { userId, healthFactorWad: hf.toString(), block: view.blockNumber.toString() },
      'below 1 at the indexed prices but not by the vault at the feeds’ answers: not liquidated',
    );
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

/** readVaultView for one vault; the vault's bonus is a constant of its code, read once (again after a failure). */
function createVaultViewReader(client: PublicClient, vault: Address) {
  let bonusBps: Promise<bigint> | null = null;
  return (who: Address, assets: readonly { assetId: string; token: Address }[]): Promise<VaultView> => {
    bonusBps ??= client
      .readContract({ address: vault, abi: credanaVaultAbi, functionName: 'LIQUIDATION_BONUS_BPS' })
      .then((b) => b as bigint)
      .catch((error: unknown) => {
        bonusBps = null;
        throw error;
      });
    return readVaultView(client, vault, who, assets, bonusBps);
  };
}

/**
 * The chain at one block as `liquidate` judges it: the account's debt and collateral, the vault's terms
 * for each asset it holds (`collateralConfig`) and the answer of each such asset's feed, and the block's
 * timestamp (what `block.timestamp` would be is at least this; a later block only ages the prices).
 */
async function readVaultView(
  client: PublicClient,
  vault: Address,
  who: Address,
  assets: readonly { assetId: string; token: Address }[],
  bonusBps: Promise<bigint>,
): Promise<VaultView> {
  // Awaited first: a rejection is then always handled here, never left unobserved.
  const bonus = await bonusBps;
  const block = await client.getBlock({ blockTag: 'latest' });
  const blockNumber = block.number;
  const state = await readVaultAccount(client, vault, who, assets, blockNumber);
  const { collateral } = state;
  const held = assets.filter((a) => (collateral.get(a.assetId) ?? 0n) > 0n);
  const terms = await Promise.all(
    held.map(async (a) => {
      // (allowed, listed, tokenDecimals, priceDecimals, ltvBps, liquidationThresholdBps, priceAgeMaxS, feed)
      const c = (await client.readContract({
        address: vault,
        abi: credanaVaultAbi,
        functionName: 'collateralConfig',
        args: [a.token],
        blockNumber,
      })) as readonly [boolean, boolean, number, number, number, number, number, Address];
      const [, answer, , updatedAt] = (await client.readContract({
        address: c[7],
        abi: priceFeedAbi,
        functionName: 'latestRoundData',
        blockNumber,
      })) as readonly [bigint, bigint, bigint, bigint, bigint];
      const asset: VaultAsset = {
        assetId: a.assetId,
        token: a.token,
        tokenDecimals: c[2],
        priceDecimals: c[3],
        liquidationThresholdBps: BigInt(c[5]),
        priceAgeMaxS: c[6],
      };
      return { asset, quote: { answer, updatedAtS: Number(updatedAt) } };
    }),
  );
  return {
    blockNumber,
    state,
    assets: terms.map((t) => t.asset),
    prices: new Map(terms.map((t) => [t.asset.assetId, t.quote])),
    nowS: Number(block.timestamp),
    bonusBps: bonus,
  };
}

/**
 * The chain's own numbers for a vault account: its debt and its collateral in each asset, at
 * `blockNumber` (all of them at one block) or the latest.
 */
async function readVaultAccount(
  client: PublicClient,
  vault: Address,
  who: Address,
  assets: readonly { assetId: string; token: Address }[],
  blockNumber?: bigint,
): Promise<AccountState> {
  const at = blockNumber === undefined ? {} : { blockNumber };
  const [debt, ...amounts] = await Promise.all([
    client.readContract({ address: vault, abi: credanaVaultAbi, functionName: 'debtOf', args: [who], ...at }),
    ...assets.map((a) =>
      client.readContract({
        address: vault,
        abi: credanaVaultAbi,
        functionName: 'collateralOf',
        args: [who, a.token],
        ...at,
      }),
    ),
  ]);
  return {
    debtUsdc: debt as bigint,
    collateral: new Map(assets.map((a, i) => [a.assetId, amounts[i] as bigint])),
  };
}
