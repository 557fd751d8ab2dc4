/**
 * The withdrawal approval service: signs the EIP-712 approval `finalizeWithdrawal` needs, only when
 * the collateral that stays in the user's vault account still covers the user's whole exposure:
 *
 *   borrowPower(collateral − every pending withdrawal) ≥ on-chain debt + unsettled captures + open
 *   holds + captures booked to the receivable account
 *
 * with the credit model's own arithmetic (`shared/credit.ts`: LTV per asset, a stale price counts as
 * zero). Each input is read from every place it lives and the larger value wins: debt from the vault
 * and Postgres, unsettled and holds from Redis (where the hot path reserves first) and Postgres.
 *
 * The reservation: the service signs only for a request the indexer has already applied. A request
 * applies at first sight and moves the pending amount into Postgres (`positions`) and the cached
 * account (`w:<asset>`, account version bumped), so from that moment every hot-path process lends
 * only against what stays; a spend approved after the check can only use credit the check left, so
 * the check still holds at finalize. A request not yet applied is refused (`request_not_indexed`):
 * the caller retries a few seconds later.
 *
 * Exposed as `approveWithdrawal` (the decision, for a caller that has authenticated the user) and two
 * Hono sub-apps: `withdrawalRoutes` (`POST /withdrawals/approvals`, for an internal caller holding
 * INTERNAL_API_TOKEN) and, in user-route.ts, `userWithdrawalRoutes` (`POST /me/withdrawals/approvals`,
 * for a signed-in cardholder: the user is the verified Supabase token's). app.ts mounts them.
 */
import { timingSafeEqual } from 'node:crypto';
import { type Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Logger } from 'pino';
import type postgres from 'postgres';
import type { Address, Hex, LocalAccount, PublicClient } from 'viem';
import { z } from 'zod';
import { type ContractsFile, credanaVaultAbi } from '../shared/chain/contracts/index.ts';
import { type AssetRisk, borrowPower, type CollateralHolding, type PriceQuote } from '../shared/credit.ts';
import { loadAssets, pricesInForce, vaultAccountsOf } from '../shared/db/queries/chain.ts';
import { usdcToCentsCeil } from '../shared/money.ts';
import { ensureAccount } from '../shared/redis/account.ts';
import type { Redis } from '../shared/redis/client.ts';
import { ACCOUNT, userKeys } from '../shared/redis/keys.ts';
import { signWithdrawalApproval } from './approval.ts';
import { WITHDRAWAL_LIMITS } from './limits.ts';

export * from './approval.ts';

export interface WithdrawalServiceDeps {
  sql: postgres.Sql;
  redis: Redis;
  prefix: string;
  client: PublicClient;
  contracts: Pick<ContractsFile, 'chainId' | 'vault' | 'assets'>;
  /** Holds the vault's WITHDRAWAL_SIGNER_ROLE. */
  signer: LocalAccount;
  logger: Logger;
  /** Approval lifetime (at most WITHDRAWAL_LIMITS.withdrawalApprovalTtlSMax). */
  approvalTtlS?: number;
  nowS?: () => number;
  /**
   * Counts each answered request (`approved`, a refusal reason, `unauthorized`, `invalid_request`,
   * and on the user route `user_not_linked`, `rate_limited`).
   */
  onAnswer?: (result: string) => void;
}

export interface WithdrawalApproval {
  user: Address;
  token: Address;
  amount: bigint;
  requestId: bigint;
  deadline: bigint;
  signature: Hex;
}

export type WithdrawalRefusal =
  | 'unknown_asset'
  | 'no_vault_account'
  | 'no_pending_withdrawal'
  | 'request_not_indexed'
  | 'uncovered';

export type WithdrawalDecision =
  | { approved: true; approval: WithdrawalApproval; exposureCents: bigint; borrowPowerAfterCents: bigint }
  | { approved: false; reason: WithdrawalRefusal; exposureCents?: bigint; borrowPowerAfterCents?: bigint };

const max = (a: bigint, b: bigint) => (a > b ? a : b);

/** Decides, and when covered signs and records, the approval of the user's pending withdrawal of an asset. */
export async function approveWithdrawal(
  deps: WithdrawalServiceDeps,
  request: { userId: string; assetId: string },
): Promise<WithdrawalDecision> {
  const { sql, redis, prefix, client, contracts, logger } = deps;
  const asset = contracts.assets.find((a) => a.assetId === request.assetId);
  if (asset === undefined) return { approved: false, reason: 'unknown_asset' };
  const account = (await vaultAccountsOf(sql, contracts.chainId, [request.userId])).get(request.userId);
  if (account === undefined) return { approved: false, reason: 'no_vault_account' };

  const [[amount, , requestId], debtOnchainUsdc, block] = await Promise.all([
    client.readContract({
      address: contracts.vault,
      abi: credanaVaultAbi,
      functionName: 'pendingWithdrawalOf',
      args: [account, asset.token],
    }) as Promise<readonly [bigint, bigint, bigint]>,
    client.readContract({
      address: contracts.vault,
      abi: credanaVaultAbi,
      functionName: 'debtOf',
      args: [account],
    }) as Promise<bigint>,
    client.getBlock({ blockTag: 'latest' }),
  ]);
  if (amount === 0n) return { approved: false, reason: 'no_pending_withdrawal' };

  await ensureAccount(redis, sql, prefix, request.userId);
  const [cached, positions, [credit], [receivable], assets] = await Promise.all([
    redis.hgetall(userKeys(prefix, request.userId).account),
    sql<{ asset_id: string; c: string; w: string }[]>`
      select asset_id, collateral_base::text as c, pending_withdrawal_base::text as w
      from positions where user_id = ${request.userId}`,
    sql<{ debt: string; uns: string; holds: string }[]>`
      select debt_onchain_usdc::text as debt, unsettled_cents::text as uns, holds_cents::text as holds
      from credit_accounts where user_id = ${request.userId}`,
    sql<{ cents: string }[]>`
      select coalesce(sum(amount_cents), 0)::text as cents from ledger_entries
      where account = 'user_receivable_unlinked' and user_id = ${request.userId}`,
    loadAssets(sql, contracts.chainId),
  ]);
  const indexed = positions.find((p) => p.asset_id === asset.assetId);
  if (indexed === undefined || BigInt(indexed.w) < amount) {
    return { approved: false, reason: 'request_not_indexed' };
  }

  const holdings: CollateralHolding[] = positions.map((p) => ({
    assetId: p.asset_id,
    amountBase: BigInt(p.c),
    pendingWithdrawalBase: max(
      BigInt(p.w),
      BigInt(cached[ACCOUNT.pendingWithdrawalPrefix + p.asset_id] ?? '0'),
    ),
  }));
  const risk = new Map<string, AssetRisk>(
    assets.map((a) => [
      a.assetId,
      {
        assetId: a.assetId,
        tokenDecimals: a.tokenDecimals,
        priceDecimals: a.priceDecimals,
        ltvBps: a.ltvBps,
        liquidationThresholdBps: a.liquidationThresholdBps,
        priceAgeMaxS: a.priceAgeMaxS,
      },
    ]),
  );
  const prices = new Map<string, PriceQuote>(
    [...(await pricesInForce(sql, [...risk.keys()])).entries()].map(([id, p]) => [
      id,
      { answer: p.answer, updatedAtS: Number(p.updatedAtS) },
    ]),
  );
  const nowS = deps.nowS?.() ?? Math.floor(Date.now() / 1000);
  const power = borrowPower({ holdings, assets: risk, prices, nowS });
  const exposureCents =
    usdcToCentsCeil(max(debtOnchainUsdc, BigInt(credit?.debt ?? '0'))) +
    max(BigInt(credit?.uns ?? '0'), BigInt(cached[ACCOUNT.unsettledCents] ?? '0')) +
    max(BigInt(credit?.holds ?? '0'), BigInt(cached[ACCOUNT.holdsCents] ?? '0')) +
    BigInt(receivable?.cents ?? '0');
  const borrowPowerAfterCents = power.borrowPowerCents;
  // The vault's own check at finalize rounds per asset in USDC units (CredanaVault.borrowPowerUsdc),
  // which can fall a unit short of the cents above: never sign what the vault would refuse.
  const vaultShort =
    vaultBorrowPowerUsdc(holdings, risk, prices) < max(debtOnchainUsdc, BigInt(credit?.debt ?? '0'));
  if ((exposureCents > 0n && borrowPowerAfterCents < exposureCents) || vaultShort) {
    logger.info(
      {
        userId: request.userId,
        assetId: asset.assetId,
        requestId: requestId.toString(),
        exposureCents: exposureCents.toString(),
        borrowPowerAfterCents: borrowPowerAfterCents.toString(),
      },
      'withdrawal refused: what stays would not cover the exposure',
    );
    return { approved: false, reason: 'uncovered', exposureCents, borrowPowerAfterCents };
  }

  const ttlS = Math.min(
    deps.approvalTtlS ?? WITHDRAWAL_LIMITS.withdrawalApprovalTtlSMax,
    WITHDRAWAL_LIMITS.withdrawalApprovalTtlSMax,
  );
  const deadline = block.timestamp + BigInt(ttlS);
  const message = { user: account, token: asset.token, amount, requestId, deadline };
  const signature = await signWithdrawalApproval(deps.signer, contracts.chainId, contracts.vault, message);
  await sql`
    insert into withdrawal_approvals (chain_id, request_id, user_id, account, asset_id, amount_base, deadline,
      exposure_cents, borrow_power_after_cents)
    values (${contracts.chainId}, ${requestId.toString()}, ${request.userId}, ${account}, ${asset.assetId},
      ${amount.toString()}, to_timestamp(${Number(deadline)}), ${exposureCents.toString()},
      ${borrowPowerAfterCents.toString()})`;
  logger.info(
    { userId: request.userId, assetId: asset.assetId, requestId: requestId.toString() },
    'withdrawal approved',
  );
  return { approved: true, approval: { ...message, signature }, exposureCents, borrowPowerAfterCents };
}

/** An asset id as `assets.asset_id` spells them (WETH, WBTC, …). */
export const assetIdSchema = z.string().regex(/^[A-Z0-9]{1,16}$/);

const approvalRequest = z.object({
  userId: z.string().uuid(),
  assetId: assetIdSchema,
});

/**
 * `POST /withdrawals/approvals` {userId, assetId} with `authorization: Bearer <INTERNAL_API_TOKEN>`:
 * 200 with the approval (amounts as decimal strings), 409 with the refusal, 400 on bad input.
 */
export function withdrawalRoutes(deps: WithdrawalServiceDeps, internalApiToken: string): Hono {
  const app = new Hono();
  const expected = Buffer.from(`Bearer ${internalApiToken}`);
  const authorized = (header: string | undefined) => {
    const given = Buffer.from(header ?? '');
    return given.length === expected.length && timingSafeEqual(given, expected);
  };
  app.post(
    '/withdrawals/approvals',
    // {userId, assetId} is a few dozen bytes: anything much larger is refused unread.
    bodyLimit({
      maxSize: WITHDRAWAL_LIMITS.withdrawalRequestBytesMax,
      onError: (c) => c.json({ error: 'body_too_large' }, 413),
    }),
    async (c) => {
      if (!authorized(c.req.header('authorization'))) {
        deps.onAnswer?.('unauthorized');
        return c.json({ error: 'unauthorized' }, 401);
      }
      const parsed = approvalRequest.safeParse(await c.req.json().catch(() => null));
      if (!parsed.success) {
        deps.onAnswer?.('invalid_request');
        return c.json({ error: 'invalid_request' }, 400);
      }
      return answerDecision(c, deps, await approveWithdrawal(deps, parsed.data));
    },
  );
  return app;
}

/**
 * The answer to a decision, the same on both routes: 409 {approved: false, reason}, or 200 with the
 * approval (amounts as decimal strings). Counted with `onAnswer`.
 */
export function answerDecision(c: Context, deps: WithdrawalServiceDeps, decision: WithdrawalDecision) {
  deps.onAnswer?.(decision.approved ? 'approved' : decision.reason);
  if (!decision.approved) return c.json({ approved: false, reason: decision.reason }, 409);
  const a = decision.approval;
  return c.json({
    approved: true,
    user: a.user,
    token: a.token,
    amount: a.amount.toString(),
    requestId: a.requestId.toString(),
    deadline: a.deadline.toString(),
    signature: a.signature,
  });
}

/**
 * Borrow power as the vault computes it when a withdrawal is finalized: per asset,
 * floor(net × answer × 10⁶ × ltvBps / (10^tokenDecimals × 10^priceDecimals × 10⁴)) in USDC units,
 * summed (CredanaVault.borrowPowerUsdc). An asset without a price counts as zero here; the vault
 * reverts on it, which refuses the payout all the same.
 */
export function vaultBorrowPowerUsdc(
  holdings: readonly CollateralHolding[],
  risk: ReadonlyMap<string, AssetRisk>,
  prices: ReadonlyMap<string, PriceQuote>,
): bigint {
  let total = 0n;
  for (const h of holdings) {
    const asset = risk.get(h.assetId);
    const price = prices.get(h.assetId);
    const net = h.amountBase - h.pendingWithdrawalBase;
    if (asset === undefined || price === undefined || price.answer <= 0n || net <= 0n) continue;
    total +=
      (net * price.answer * 1_000_000n * asset.ltvBps) /
      (10n ** BigInt(asset.tokenDecimals) * 10n ** BigInt(asset.priceDecimals) * 10_000n);
  }
  return total;
}
