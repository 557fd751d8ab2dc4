/**
 * `npm run demo`: a short story played against the stack `npm run dev` started (its
 * `<DEV_STATE_DIR>/stack.json`, and the same config for the databases and Redis), every step printed
 * with its numbers:
 *  1. a deposit on-chain for a demo user, credited by the indexer after the confirmations;
 *  2. swipes signed exactly as Stripe signs them: one approved, two declined with their reasons;
 *  3. a price drop on the WETH feed: available credit falls at first sight and a swipe that fitted
 *     before is declined; then the price recovers (after the confirmations, as any rise);
 *  4. a freeze through the Supabase-local `card_controls` table, as the signed-in user would: the
 *     next swipe is declined `card_frozen`; then the card is unfrozen;
 *  5. a capture: `issuing_authorization.created` then `issuing_transaction.created` to POST
 *     /stripe/events, settled on-chain by the settlement worker and confirmed by the indexer;
 *  6. a withdrawal of all the collateral while the vault holds debt: it counts against credit at
 *     first sight, the withdrawal approval service refuses to sign it (`uncovered`, with the exposure
 *     and the borrow power that would be left), and the user cancels it;
 *  7. a liquidation, on a position of its own (Carol, signed up through Supabase on first use): a
 *     deposit, a spend captured and settled on-chain of 96 % of her credit (her dashboard shows the
 *     health warning), a WETH drop of 12 % takes her health factor below 1 — no credit at once, a
 *     swipe declined — the liquidator (started by `npm run dev`) repays her debt and seizes the
 *     collateral plus the 5 % bonus, the indexer books it, her credit comes back and her dashboard's
 *     activity shows the liquidation; then the price recovers.
 * Every wait is bounded (scripts/demo/world.ts DEMO_LIMITS). Exit 0 when the story completed;
 * otherwise one line on stderr and exit 1. Safe to repeat (each run deposits a little more WETH and
 * spends a little of the daily limit).
 */
import { formatUnits } from 'viem';
import { configFromProcess } from '../shared/config.ts';
import { USDC_PER_CENT, WAD } from '../shared/money.ts';
import {
  authorizationEvent,
  randomStripeId,
  transactionEvent,
} from '../test/support/stripe-issuing-events.ts';
import { ROLES } from './chain/harness.ts';
import {
  DEMO_LIMITS,
  DemoError,
  type DemoWorld,
  dollars,
  ensureDemoUser,
  openDemoWorld,
  priceCents,
  type SwipeResult,
  weth,
} from './demo/world.ts';
import { readStack, type StackSummary, type StackUser, stackFile } from './dev/stack.ts';

// A local tool: NODE_ENV=development unless set (shared/config.ts, ConfigFromProcessOptions).
const config = configFromProcess({}, { localTool: true });
const out = (line: string) => process.stdout.write(`${line}\n`);
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const verdict = (swipe: SwipeResult) =>
  `${swipe.approved ? 'approved' : 'declined'} (reason ${swipe.reason})`;

/** Grocery, electronics: merchant category codes no rule blocks. */
const GROCERY_MCC = '5411';
const ELECTRONICS_MCC = '5732';
const SMALL_SWIPE_CENTS = 1_250n;
const DEPOSIT_BASE = 10n ** 17n; // 0.1 WETH
const PRICE_DROP_PERCENT = 40n;
/** Step 7's own position: a fixed id and Hardhat account, so repeated runs reuse it. */
const CAROL = {
  userId: '00000000-0000-4000-8000-000000000003',
  email: 'carol@credana.test',
  name: 'Carol',
  cardId: 'ic_demo_carol',
  account: ROLES.firstUser + 2,
};
const CAROL_DEPOSIT_BASE = 10n ** 16n; // 0.01 WETH
/** Carol spends this share of her available credit: health 0.825 / (0.80 × 0.96) ≈ 1.07 after. */
const CAROL_DRAW_PERCENT = 96n;
/** Then WETH drops by this much: her health factor ≈ 1.07 × 0.88 ≈ 0.95, below 1. */
const LIQUIDATION_DROP_PERCENT = 12n;
const wadText = (wad: bigint) => (Number(wad / 10n ** 14n) / 10_000).toFixed(4);

function expect(ok: boolean, step: string, swipe: SwipeResult, wanted: string): void {
  if (!ok) throw new DemoError(`step ${step}: expected ${wanted}, the hot path answered ${verdict(swipe)}`);
}

async function refreshStalePrice(world: DemoWorld): Promise<void> {
  const market = await world.price();
  const ageS = Math.floor(Date.now() / 1000) - market.updatedAtS;
  // The local chain has no oracle heartbeat: a price older than its limit makes every swipe stale_price.
  if (ageS <= market.priceAgeMaxS / 2) return;
  out(
    `0. The WETH feed last updated ${ageS} s ago (limit ${market.priceAgeMaxS} s); transmitting ${dollars(priceCents(market.answer, market.decimals))} again, as an oracle heartbeat would`,
  );
  await world.pushPrice(market.answer);
}

async function deposit(world: DemoWorld): Promise<void> {
  const wallet = world.user.wallet as `0x${string}`;
  out(`1. Deposit on-chain`);
  const before = await world.credit();
  const collateralBefore = await world.cachedCollateral();
  out(`   available credit before: ${dollars(before.availableCents)} (collateral ${weth(collateralBefore)})`);
  const block = await world.chain.deposit(wallet, world.weth.assetId, DEPOSIT_BASE);
  const extra = Math.max(config.CHAIN_CONFIRMATIONS - 1, 0);
  await world.chain.mine(extra);
  out(
    `   minted, approved and deposited ${weth(DEPOSIT_BASE)} from ${wallet} in block ${block}; mined ${extra} more for CHAIN_CONFIRMATIONS=${config.CHAIN_CONFIRMATIONS}`,
  );
  const startedAt = Date.now();
  await world.waitFor('the indexer to credit the deposit', DEMO_LIMITS.indexerWaitMs, async () =>
    (await world.cachedCollateral()) >= collateralBefore + DEPOSIT_BASE ? true : null,
  );
  const after = await world.credit();
  out(
    `   the indexer credited it ${seconds(Date.now() - startedAt)} later: available credit ${dollars(after.availableCents)} (+${dollars(after.availableCents - before.availableCents)})`,
  );
}

async function swipes(world: DemoWorld): Promise<SwipeResult> {
  out('2. Swipes, signed as Stripe signs them, to POST /stripe/authorizations');
  const grocery = await world.swipe({ amountCents: SMALL_SWIPE_CENTS, mcc: GROCERY_MCC });
  expect(grocery.approved, '2a', grocery, 'an approval');
  out(`   2a. ${dollars(SMALL_SWIPE_CENTS)} at a grocery (MCC ${GROCERY_MCC}): ${verdict(grocery)}`);

  const available = (await world.credit()).availableCents;
  const tooLarge = available > 0n ? available + 1n : 1n;
  const big = await world.swipe({ amountCents: tooLarge, mcc: ELECTRONICS_MCC });
  expect(!big.approved, '2b', big, 'a decline');
  out(
    `   2b. ${dollars(tooLarge)} at an electronics store (MCC ${ELECTRONICS_MCC}), 1 cent over the ${dollars(available)} available: ${verdict(big)}`,
  );

  const blockedMcc = config.BLOCKED_MCCS[0];
  if (blockedMcc !== undefined) {
    const casino = await world.swipe({ amountCents: 2_000n, mcc: blockedMcc });
    expect(!casino.approved && casino.reason === 'blocked_mcc', '2c', casino, 'a blocked_mcc decline');
    out(`   2c. ${dollars(2_000n)} at MCC ${blockedMcc} (in BLOCKED_MCCS): ${verdict(casino)}`);
  }
  return grocery;
}

async function priceDrop(world: DemoWorld): Promise<void> {
  out('3. Price drop');
  const market = await world.price();
  const creditBefore = (await world.credit()).availableCents;
  const dropped = (market.answer * (100n - PRICE_DROP_PERCENT)) / 100n;
  const drop = await world.pushPrice(dropped);
  const creditAfter = (await world.credit()).availableCents;
  out(
    `   3a. the WETH feed transmits ${dollars(priceCents(dropped, market.decimals))} (was ${dollars(priceCents(market.answer, market.decimals))}, -${PRICE_DROP_PERCENT}%) in block ${drop.block}; a drop applies at first sight: the hot path had it ${seconds(drop.waitedMs)} later`,
  );
  out(`   3b. available credit ${dollars(creditBefore)} -> ${dollars(creditAfter)}`);
  // Whole dollars halfway between: it fitted before the drop and does not now.
  const amount = ((creditBefore + creditAfter) / 2n / 100n) * 100n;
  if (amount <= creditAfter || amount > creditBefore || amount <= 0n)
    throw new DemoError(
      `step 3: the drop moved available credit too little to show (${dollars(creditBefore)} -> ${dollars(creditAfter)})`,
    );
  try {
    const swipe = await world.swipe({ amountCents: amount, mcc: ELECTRONICS_MCC });
    expect(!swipe.approved, '3c', swipe, 'a decline');
    out(
      `   3c. ${dollars(amount)} at an electronics store, within the ${dollars(creditBefore)} available before the drop: ${verdict(swipe)}`,
    );
  } finally {
    const recovery = await world.pushPrice(market.answer);
    const creditBack = (await world.credit()).availableCents;
    out(
      `   3d. the feed recovers to ${dollars(priceCents(market.answer, market.decimals))} in block ${recovery.block}; a rise waits for the confirmations: available credit ${dollars(creditBack)} after ${seconds(recovery.waitedMs)}`,
    );
  }
}

async function freeze(world: DemoWorld): Promise<void> {
  out("4. Freeze in Supabase (card_controls, updated as the signed-in user through the API's role and RLS)");
  const frozen = await world.setFrozen(true);
  try {
    out(`   4a. frozen = true; the bridge carried it to the hot path in ${frozen.waitedMs} ms`);
    const swipe = await world.swipe({ amountCents: SMALL_SWIPE_CENTS, mcc: GROCERY_MCC });
    expect(!swipe.approved && swipe.reason === 'card_frozen', '4b', swipe, 'a card_frozen decline');
    out(`   4b. ${dollars(SMALL_SWIPE_CENTS)} at a grocery: ${verdict(swipe)}`);
  } finally {
    const unfrozen = await world.setFrozen(false);
    out(`   4c. frozen = false; in the hot path ${unfrozen.waitedMs} ms later`);
  }
  const again = await world.swipe({ amountCents: SMALL_SWIPE_CENTS, mcc: GROCERY_MCC });
  expect(again.approved, '4d', again, 'an approval');
  out(`   4d. ${dollars(SMALL_SWIPE_CENTS)} at a grocery again: ${verdict(again)}`);
}

/** Sends Stripe's created + capture events for `amountCents` of an approved swipe; waits for the settlement on-chain. */
async function captureAndSettle(
  world: DemoWorld,
  authorization: SwipeResult,
  amountCents: bigint,
  step: string,
): Promise<{
  transactionId: string;
  transactionHash: string;
  debtBefore: bigint;
  debtAfter: bigint;
  waitedMs: number;
}> {
  const { cardId } = world.user;
  const apiVersion = world.stack.stripe.apiVersion;
  const debtBefore = await world.debtOnChainUsdc();
  await world.sendEvent(
    authorizationEvent({
      type: 'issuing_authorization.created',
      cardId,
      authorizationId: authorization.authorizationId,
      amountCents: Number(amountCents),
      approved: true,
      status: 'pending',
      requestHistory: 1,
      createdS: authorization.createdS,
      apiVersion,
    }),
  );
  const transactionId = `ipi_demo_${randomStripeId()}`;
  const startedAt = Date.now();
  await world.sendEvent(
    transactionEvent({
      cardId,
      type: 'capture',
      amountCents: Number(amountCents),
      authorizationId: authorization.authorizationId,
      createdS: Math.floor(Date.now() / 1000),
      transactionId,
      apiVersion,
    }),
  );
  const transactionHash = await world.waitFor(
    'the settlement worker to record the capture on-chain and the indexer to confirm it',
    DEMO_LIMITS.settlementWaitMs,
    async () => {
      const row = await world.settlement(transactionId);
      if (row?.status === 'failed')
        throw new DemoError(`step ${step}: settlement of ${transactionId} failed`);
      return row?.status === 'confirmed' && row.transactionHash !== null ? row.transactionHash : null;
    },
  );
  const debtAfter = await world.debtOnChainUsdc();
  if (debtAfter - debtBefore !== amountCents * USDC_PER_CENT)
    throw new DemoError(
      `step ${step}: the vault's debt grew by ${formatUnits(debtAfter - debtBefore, 6)} USDC, not ${dollars(amountCents)}`,
    );
  return { transactionId, transactionHash, debtBefore, debtAfter, waitedMs: Date.now() - startedAt };
}

async function capture(world: DemoWorld, authorization: SwipeResult): Promise<void> {
  out('5. Capture, settled on-chain');
  const { cardId, wallet } = world.user;
  const apiVersion = world.stack.stripe.apiVersion;
  const debtBefore = await world.debtOnChainUsdc();
  await world.sendEvent(
    authorizationEvent({
      type: 'issuing_authorization.created',
      cardId,
      authorizationId: authorization.authorizationId,
      amountCents: Number(SMALL_SWIPE_CENTS),
      approved: true,
      status: 'pending',
      requestHistory: 1,
      createdS: authorization.createdS,
      apiVersion,
    }),
  );
  out(`   5a. issuing_authorization.created for ${authorization.authorizationId} (the grocery swipe of 2a)`);
  const transactionId = `ipi_demo_${randomStripeId()}`;
  const startedAt = Date.now();
  await world.sendEvent(
    transactionEvent({
      cardId,
      type: 'capture',
      amountCents: Number(SMALL_SWIPE_CENTS),
      authorizationId: authorization.authorizationId,
      createdS: Math.floor(Date.now() / 1000),
      transactionId,
      apiVersion,
    }),
  );
  out(`   5b. issuing_transaction.created: capture ${transactionId} of ${dollars(SMALL_SWIPE_CENTS)}`);
  const settled = await world.waitFor(
    'the settlement worker to record the capture on-chain and the indexer to confirm it',
    DEMO_LIMITS.settlementWaitMs,
    async () => {
      const row = await world.settlement(transactionId);
      if (row?.status === 'failed') throw new DemoError(`step 5: settlement of ${transactionId} failed`);
      return row?.status === 'confirmed' && row.transactionHash !== null ? row.transactionHash : null;
    },
  );
  const debtAfter = await world.debtOnChainUsdc();
  out(
    `   5c. settled in transaction ${settled} (${seconds(Date.now() - startedAt)} after the capture); the vault's debt for ${wallet}: ${formatUnits(debtBefore, 6)} -> ${formatUnits(debtAfter, 6)} USDC`,
  );
  if (debtAfter - debtBefore !== SMALL_SWIPE_CENTS * USDC_PER_CENT)
    throw new DemoError(
      `step 5: the vault's debt grew by ${formatUnits(debtAfter - debtBefore, 6)} USDC, not ${dollars(SMALL_SWIPE_CENTS)}`,
    );
}

async function refusedWithdrawal(world: DemoWorld): Promise<void> {
  out('6. A withdrawal that would leave the debt uncovered');
  const wallet = world.user.wallet as `0x${string}`;
  const [collateral, debt, before] = await Promise.all([
    world.collateralOnChain(),
    world.debtOnChainUsdc(),
    world.credit(),
  ]);
  if (collateral === 0n || debt === 0n)
    throw new DemoError(
      `step 6: the user needs collateral and debt (has ${weth(collateral)}, ${formatUnits(debt, 6)} USDC)`,
    );
  const block = await world.chain.requestWithdrawal(wallet, world.weth.assetId, collateral);
  out(
    `   6a. ${wallet} requests to withdraw all its ${weth(collateral)} in block ${block}, while the vault holds ${formatUnits(debt, 6)} USDC of its debt`,
  );
  try {
    const decision = await world.approveWithdrawal();
    if (decision.approved)
      throw new DemoError(
        'step 6: the withdrawal approval service approved a withdrawal that leaves the debt uncovered',
      );
    out(
      `   6b. the withdrawal approval service refuses to sign (reason ${decision.reason}): exposure ${dollars(decision.exposureCents ?? 0n)} (debt, unsettled, holds) against ${dollars(decision.borrowPowerAfterCents ?? 0n)} of borrow power left; without its EIP-712 approval finalizeWithdrawal reverts`,
    );
    if (decision.reason !== 'uncovered')
      throw new DemoError(`step 6: refused for ${decision.reason}, not uncovered`);
    const during = await world.credit();
    out(
      `   6c. the request counts at first sight: available credit ${dollars(before.availableCents)} -> ${dollars(during.availableCents)}`,
    );
  } finally {
    const cancelled = await world.chain.cancelWithdrawal(wallet, world.weth.assetId);
    // A cancellation gives credit back, so it waits for the confirmations like a deposit.
    await world.chain.mine(config.CHAIN_CONFIRMATIONS);
    const startedAt = Date.now();
    await world.waitFor('the indexer to apply the cancellation', DEMO_LIMITS.indexerWaitMs, async () =>
      (await world.cachedPendingWithdrawal()) === 0n ? true : null,
    );
    const after = await world.credit();
    out(
      `   6d. cancelled in block ${cancelled}; after the confirmations (${seconds(Date.now() - startedAt)}) available credit is ${dollars(after.availableCents)}`,
    );
  }
}

/** Steps 7a–7c: Carol deposits, spends most of her credit (settled on-chain), and her dashboard warns. */
async function collateralAndDebt(
  world: DemoWorld,
  user: StackUser,
  wallet: `0x${string}`,
): Promise<Awaited<ReturnType<typeof captureAndSettle>>> {
  // 7a. Collateral.
  const collateralBefore = await world.cachedCollateral();
  const block = await world.chain.deposit(wallet, world.weth.assetId, CAROL_DEPOSIT_BASE);
  await world.chain.mine(Math.max(config.CHAIN_CONFIRMATIONS - 1, 0));
  await world.waitFor('the indexer to credit Carol’s deposit', DEMO_LIMITS.indexerWaitMs, async () =>
    (await world.cachedCollateral()) >= collateralBefore + CAROL_DEPOSIT_BASE ? true : null,
  );
  const credit = await world.credit();
  out(
    `   7a. Carol (user ${user.userId}, wallet ${wallet}) deposits ${weth(CAROL_DEPOSIT_BASE)} in block ${block}: collateral ${weth(await world.collateralOnChain())}, available credit ${dollars(credit.availableCents)}`,
  );

  // 7b. Debt, on-chain (the liquidator judges the vault's own numbers).
  const amount = (credit.availableCents * CAROL_DRAW_PERCENT) / 100n;
  if (amount <= 0n)
    throw new DemoError(`step 7b: Carol has no credit to spend (${dollars(credit.availableCents)})`);
  const spend = await world.swipe({ amountCents: amount, mcc: GROCERY_MCC });
  expect(spend.approved, '7b', spend, 'an approval');
  const settled = await captureAndSettle(world, spend, amount, '7b');
  const drawn = await world.credit();
  out(
    `   7b. ${dollars(amount)} at a grocery (${CAROL_DRAW_PERCENT}% of her credit): ${verdict(spend)}; captured and settled in transaction ${settled.transactionHash}: the vault's debt ${formatUnits(settled.debtAfter, 6)} USDC, health factor ${drawn.healthFactorWad === null ? 'n/a' : wadText(drawn.healthFactorWad)}`,
  );

  // 7c. The warning, as Carol sees it.
  const warningLine = BigInt(config.HEALTH_FACTOR_WARNING_BPS);
  const warns = drawn.healthFactorWad !== null && drawn.healthFactorWad * 10_000n < WAD * warningLine;
  const notice = warns ? 'warning' : null;
  const view = await world.waitFor(
    `Carol's dashboard to show health_notice = ${notice}`,
    DEMO_LIMITS.projectionWaitMs,
    async () => {
      const d = await world.dashboard();
      return d !== null && d.healthNotice === notice && d.availableCents === drawn.availableCents ? d : null;
    },
  );
  out(
    `   7c. Carol's dashboard (account_summaries, read as Carol through RLS): health factor ${Number(view.healthFactor).toFixed(4)}, health_notice = ${view.healthNotice ?? 'none'} (warning line ${Number(warningLine) / 10_000})`,
  );
  return settled;
}

async function liquidation(stack: StackSummary, contractsFile: DemoWorld['contracts']): Promise<void> {
  out('7. A position below a health factor of 1: no credit at once, then a liquidation');
  const user = await ensureDemoUser(config, contractsFile, CAROL);
  const world = await openDemoWorld(config, stack, user);
  const wallet = user.wallet as `0x${string}`;
  const market = await world.price();
  let dropped = false;
  try {
    const settled = await collateralAndDebt(world, user, wallet);

    // 7d. The drop: no credit at once.
    const previous = await world.latestLiquidation();
    const lower = (market.answer * (100n - LIQUIDATION_DROP_PERCENT)) / 100n;
    dropped = true;
    const drop = await world.pushPrice(lower);
    const after = await world.credit();
    out(
      `   7d. the WETH feed transmits ${dollars(priceCents(lower, market.decimals))} (-${LIQUIDATION_DROP_PERCENT}%) in block ${drop.block}; the hot path had it ${seconds(drop.waitedMs)} later: health factor ${after.healthFactorWad === null ? 'n/a' : wadText(after.healthFactorWad)}, available credit ${dollars(after.availableCents)}`,
    );
    if (after.healthFactorWad === null || after.healthFactorWad >= WAD || after.availableCents > 0n)
      throw new DemoError(`step 7d: the drop left Carol's health factor at or above 1 or her credit above 0`);
    const declined = await world.swipe({ amountCents: 100n, mcc: GROCERY_MCC });
    expect(
      !declined.approved && declined.reason === 'insufficient_credit',
      '7e',
      declined,
      'an insufficient_credit decline',
    );
    out(`   7e. ${dollars(100n)} at a grocery: ${verdict(declined)}`);

    // 7f. The liquidator.
    const startedAt = Date.now();
    const liquidated = await world.waitFor(
      'the liquidator to liquidate Carol’s position and see its receipt',
      DEMO_LIMITS.liquidationWaitMs,
      async () => {
        const row = await world.latestLiquidation();
        if (row === null || (previous !== null && row.id <= previous.id)) return null;
        if (row.status === 'failed')
          throw new DemoError(`step 7f: liquidation ${row.transactionHash} failed`);
        // Confirmed once its receipt is CHAIN_CONFIRMATIONS deep; the local node mines only when asked.
        if (row.status === 'mined') await world.chain.mine(1);
        return row.status === 'confirmed' ? row : null;
      },
    );
    const debtAfter = await world.debtOnChainUsdc();
    out(
      `   7f. the liquidator liquidated at health factor ${wadText(liquidated.healthFactorWad)}, ${seconds(Date.now() - startedAt)} later, in transaction ${liquidated.transactionHash}: repaid ${formatUnits(liquidated.debtCoveredUsdc, 6)} of her ${formatUnits(settled.debtAfter, 6)} USDC of debt (the whole debt under $2,000 or below a health factor of 0.95, else half: Aave v3's close factor) and seized ${weth(liquidated.collateralSeizedBase)} (the debt at the price plus the 5% bonus); the vault's debt is now ${formatUnits(debtAfter, 6)} USDC`,
    );

    // 7g. Booked by the indexer: credit again.
    const healthy = await world.waitFor(
      'the indexer to book the liquidation',
      DEMO_LIMITS.indexerWaitMs,
      async () => {
        const c = await world.credit();
        return c.debtOnchainCents === (debtAfter + USDC_PER_CENT - 1n) / USDC_PER_CENT &&
          c.availableCents > 0n
          ? c
          : null;
      },
    );
    out(
      `   7g. the indexer booked it at first sight: collateral ${weth(await world.cachedCollateral())}, available credit ${dollars(healthy.availableCents)} again`,
    );
    const activity = await world.waitFor(
      "the liquidation in Carol's dashboard activity",
      DEMO_LIMITS.projectionWaitMs,
      async () => {
        const rows = await world.dashboardActivity('liquidation');
        return rows.find((r) => r.amountBase === liquidated.collateralSeizedBase.toString()) ?? null;
      },
    );
    out(
      `   7h. Carol's dashboard activity: a liquidation of ${weth(BigInt(activity.amountBase ?? '0'))} covering ${dollars(BigInt(activity.amountCents ?? '0'))}`,
    );
  } finally {
    if (dropped) {
      const recovery = await world.pushPrice(market.answer);
      out(
        `   7i. the feed recovers to ${dollars(priceCents(market.answer, market.decimals))} in block ${recovery.block} (${seconds(recovery.waitedMs)}, after the confirmations)`,
      );
    }
    await world.close();
  }
}

async function story(): Promise<void> {
  const stack = readStack(config.DEV_STATE_DIR);
  if (stack === null)
    throw new DemoError(
      `no ${stackFile(config.DEV_STATE_DIR)}: start the stack with npm run dev and wait for "Credana dev stack is up"`,
    );
  // The demo user with the smaller position (Bob in dev's list): the too-large swipe stays under the
  // daily limit, so it shows insufficient_credit rather than daily_limit.
  const user = stack.users[1] ?? stack.users[0];
  if (user === undefined) throw new DemoError(`no demo users in ${stackFile(config.DEV_STATE_DIR)}`);
  const world = await openDemoWorld(config, stack, user);
  try {
    out(`Credana demo: user ${user.userId}, card ${user.cardId}, hot path ${stack.hotPath.baseUrl}`);
    await refreshStalePrice(world);
    await deposit(world);
    const grocery = await swipes(world);
    await priceDrop(world);
    await freeze(world);
    await capture(world, grocery);
    await refusedWithdrawal(world);
  } finally {
    await world.close();
  }
  await liquidation(stack, world.contracts);
  out('The story is complete.');
}

try {
  await story();
  process.exit(0);
} catch (error) {
  const line =
    error instanceof DemoError ? error.message : `failed: ${(error as Error).message.split('\n')[0]}`;
  process.stderr.write(`demo: ${line}\n`);
  process.exit(1);
}
