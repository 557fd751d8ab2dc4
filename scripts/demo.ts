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
 *     /stripe/events, settled on-chain by the settlement worker and confirmed by the indexer.
 * Every wait is bounded (scripts/demo/world.ts DEMO_LIMITS). Exit 0 when the story completed;
 * otherwise one line on stderr and exit 1. Safe to repeat (each run deposits a little more WETH and
 * spends a little of the daily limit).
 */
import { formatUnits } from 'viem';
import { configFromProcess } from '../shared/config.ts';
import { USDC_PER_CENT } from '../shared/money.ts';
import { authorizationEvent, randomStripeId, transactionEvent } from '../shared/stripe/issuing-events.ts';
import {
  DEMO_LIMITS,
  DemoError,
  type DemoWorld,
  dollars,
  openDemoWorld,
  priceCents,
  type SwipeResult,
  weth,
} from './demo/world.ts';
import { readStack, stackFile } from './dev/stack.ts';

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
    out('The story is complete.');
  } finally {
    await world.close();
  }
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
