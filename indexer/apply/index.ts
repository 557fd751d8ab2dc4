/**
 * Turning chain events into credit, inside the range's Postgres transaction: store the events,
 * decide which apply now (effects.ts), add their deltas to positions and credit accounts, book the
 * ledger, record prices and settlements, move the cursor. A reorg runs the same code with the sign
 * flipped over the orphaned events that had been applied, so undo is exact.
 *
 * It is an invariant that an event's effect is in the books iff its chain_events row has applied_at
 * set: both change in the same transaction.
 */
import type postgres from 'postgres';
import type { Address, Hex } from 'viem';
import { LIMITS } from '../../shared/chain/limits.ts';
import { lockChainApply } from '../../shared/db/locks.ts';
import { type PriceRow, pricesInForce, vaultAccountsOf, walletUsers } from '../../shared/db/queries/chain.ts';
import { addToCreditAccounts, ensureCreditAccounts } from '../../shared/db/queries/credit-accounts.ts';
import {
  insertAudit,
  insertTransfers,
  ledgerEntriesByRef,
  type TransferInput,
} from '../../shared/db/queries/ledger.ts';
import { USDC_PER_CENT } from '../../shared/money.ts';
import {
  addPositionDeltas,
  type BlockHeader,
  type BlockRef,
  deleteBlocksAbove,
  deleteEventsAbove,
  deletePrices,
  type EventRecord,
  eventsAbove,
  insertBlocks,
  insertEvents,
  markApplied,
  type PositionDelta,
  type PriceSanityState,
  prepareForInsert,
  priceSanityState,
  pruneBlocks,
  refundsByRef,
  setRefundStatus,
  setSettlementStatus,
  settlementsByRef,
  upsertPrices,
  waitingEvents,
  waitingEventsOfUserBefore,
  writeCursor,
} from '../store/index.ts';
import type { DecodedLog } from '../sync/index.ts';
import {
  appliesNow,
  argsToJson,
  confirmedTipOf,
  type Effect,
  effectOf,
  judgeRound,
  logKey,
  type RoundVerdict,
} from './effects.ts';

export * from './effects.ts';

type Tx = postgres.TransactionSql;

export interface ApplyContext {
  chainId: number;
  cursorId: string;
  confirmations: number;
  reorgDepthMax: number;
  /** Token address (lowercase) → asset id. */
  assetByToken: ReadonlyMap<Address, string>;
  /** Aggregator address (lowercase) → asset id. */
  assetByAggregator: ReadonlyMap<Address, string>;
}

/** What a commit changed, for the Redis write-through after it. */
export interface Touched {
  users: Set<string>;
  assets: Set<string>;
  /** Unsettled cents moved once per event key (negative: settled on-chain; positive: undone). */
  unsettledMoves: { userId: string; eventKey: string; amountCents: bigint }[];
  /** Oracle rounds held back by the sanity rules (alerted after the commit). */
  heldRounds: HeldRound[];
  stored: number;
  applied: number;
  undone: number;
}

export function newTouched(): Touched {
  return {
    users: new Set(),
    assets: new Set(),
    unsettledMoves: [],
    heldRounds: [],
    stored: 0,
    applied: 0,
    undone: 0,
  };
}

/** An oracle round that failed the sanity rules (effects.ts `judgeRound`). */
export interface HeldRound {
  assetId: string;
  verdict: Exclude<RoundVerdict, 'ok'>;
  roundId: bigint;
  answer: bigint;
  updatedAtS: bigint;
  blockNumber: bigint;
  blockHash: Hex;
}

/**
 * Held rounds of this process's plans. A held round is marked applied at first sight with the effect
 * "hold": a spike writes nothing (the last accepted, lower price stays in force); an out-of-bounds or
 * future round writes a zero row (answer 0 counts the asset as worth zero) stamped no later than the
 * reference, so it is in force until a later accepted round. Undoing either after a reorg deletes the
 * row by round and block, like any price.
 */
const heldRounds = new WeakMap<EventRecord, { verdict: Exclude<RoundVerdict, 'ok'>; zeroAtS: bigint }>();

/** Ledger ref of the transfer a chain log booked, and of its reversal after a reorg. */
export function chainLedgerRef(event: EventRecord): string {
  return `chain:${logKey(event)}`;
}
export function reorgLedgerRef(event: EventRecord): string {
  return `chain-reorg:${logKey(event)}`;
}

const effects = new WeakMap<EventRecord, Effect | null>();

/** The effect of a stored or fresh event, computed once per record. */
export function effectOfRecord(event: EventRecord): Effect | null {
  let effect = effects.get(event);
  if (effect === undefined) {
    effect = effectOf(event.eventName, event.args);
    effects.set(event, effect);
  }
  return effect;
}

const byChainOrder = (a: EventRecord, b: EventRecord): number =>
  a.blockNumber === b.blockNumber ? a.logIndex - b.logIndex : a.blockNumber < b.blockNumber ? -1 : 1;

/** An event that moves a user's credit, with its effect. */
type UserEffect = { event: EventRecord; effect: Effect; userId: string };

/** Per user: on-chain debt (USDC base units) and unsettled cents to add. */
type CreditDelta = { userId: string; debtUsdcDelta: bigint; unsettledCentsDelta: bigint };

/** What one `applyEffects` call writes, gathered before the writes. */
interface EffectWrites {
  positions: Map<string, PositionDelta>;
  credit: Map<string, CreditDelta>;
  creditOf(userId: string): CreditDelta;
  priceUpserts: PriceRow[];
  priceDeletes: { assetId: string; roundId: bigint; blockNumber: bigint }[];
  spends: UserEffect[];
  refunds: UserEffect[];
  reductions: UserEffect[];
  transfers: TransferInput[];
  confirmedRefs: string[];
  reopenedRefs: string[];
  confirmedRefunds: string[];
  reopenedRefunds: string[];
}

function newEffectWrites(): EffectWrites {
  const credit = new Map<string, CreditDelta>();
  const creditOf = (userId: string): CreditDelta => {
    let delta = credit.get(userId);
    if (delta === undefined) {
      delta = { userId, debtUsdcDelta: 0n, unsettledCentsDelta: 0n };
      credit.set(userId, delta);
    }
    return delta;
  };
  return {
    positions: new Map(),
    credit,
    creditOf,
    priceUpserts: [],
    priceDeletes: [],
    spends: [],
    refunds: [],
    reductions: [],
    transfers: [],
    confirmedRefs: [],
    reopenedRefs: [],
    confirmedRefunds: [],
    reopenedRefunds: [],
  };
}

/**
 * Adds (sign 1) or subtracts (sign −1) the effects of `events`, all of which are (or were) applied.
 * Events of unlinked wallets and unknown tokens or feeds move nothing. Neither do events of a user's
 * other wallets: only the user's vault account (the first wallet linked on the chain, where the
 * settlement worker records the debt) counts, so credit counts exactly what is liquidatable together
 * with the debt. A user's other wallets fund the account with `depositFor(account, …)`.
 */
export async function applyEffects(
  tx: Tx,
  ctx: ApplyContext,
  events: readonly EventRecord[],
  sign: 1n | -1n,
  touched: Touched,
): Promise<void> {
  const writes = newEffectWrites();
  const accounts = await vaultAccountsOf(tx, ctx.chainId, [
    ...new Set(events.flatMap((e) => (e.userId === null ? [] : [e.userId]))),
  ]);
  collectEffects(ctx, events, sign, accounts, writes, touched);
  if (sign > 0n) {
    await bookSettlements(tx, writes, touched);
    await bookRefunds(tx, writes, touched);
    bookReductions(writes);
  } else {
    await bookUndo(tx, writes, touched);
  }
  await writeEffects(tx, writes);
}

/**
 * Sorts the effects of `events` into `writes`: price rows, position deltas and debt deltas now; spends,
 * refunds and debt reductions for the booking that follows.
 */
function collectEffects(
  ctx: ApplyContext,
  events: readonly EventRecord[],
  sign: 1n | -1n,
  accounts: ReadonlyMap<string, Address>,
  writes: EffectWrites,
  touched: Touched,
): void {
  const { positions, creditOf, priceUpserts, priceDeletes, spends, refunds, reductions } = writes;
  for (const event of events) {
    const effect = effectOfRecord(event);
    if (effect === null) continue;
    if (effect.price !== undefined) {
      const assetId = ctx.assetByAggregator.get(event.address);
      if (assetId === undefined) continue;
      const row = { assetId, ...effect.price, blockNumber: event.blockNumber };
      const held = heldRounds.get(event);
      if (sign < 0n) priceDeletes.push(row);
      else if (held === undefined) priceUpserts.push(row);
      else if (held.verdict !== 'spike') priceUpserts.push({ ...row, answer: 0n, updatedAtS: held.zeroAtS });
      touched.assets.add(assetId);
      continue;
    }
    const userId = event.userId;
    if (userId === null) continue;
    if (effect.wallet !== accounts.get(userId)) continue; // not the user's vault account
    touched.users.add(userId);
    if (effect.position !== undefined) {
      const assetId = ctx.assetByToken.get(effect.position.token);
      if (assetId !== undefined) {
        const key = `${userId}|${assetId}`;
        const delta = positions.get(key) ?? { userId, assetId, collateralDelta: 0n, pendingDelta: 0n };
        delta.collateralDelta += sign * effect.position.collateralDelta;
        delta.pendingDelta += sign * effect.position.pendingDelta;
        positions.set(key, delta);
      }
    }
    if (effect.debtUsdcDelta !== undefined) creditOf(userId).debtUsdcDelta += sign * effect.debtUsdcDelta;
    if (effect.spend !== undefined) spends.push({ event, effect, userId });
    if (effect.refund !== undefined) refunds.push({ event, effect, userId });
    if (effect.debtReduction !== undefined) reductions.push({ event, effect, userId });
  }
}

/** Books the settlements the chain confirmed: each spend that settles one of our captures. */
async function bookSettlements(tx: Tx, writes: EffectWrites, touched: Touched): Promise<void> {
  const { spends, creditOf, confirmedRefs, transfers } = writes;
  // A spend moves unsettled cents into on-chain debt only when it is the settlement of one of our
  // captures for the same user and amount; anything else raises debt and leaves unsettled alone.
  const settlements = await settlementsByRef(
    tx,
    spends.map((s) => s.effect.spend?.ref ?? ''),
  );
  for (const { event, effect, userId } of spends) {
    const spend = effect.spend;
    const row = spend === undefined ? undefined : settlements.get(spend.ref);
    if (
      spend === undefined ||
      row === undefined ||
      row.userId !== userId ||
      row.amountUsdc !== spend.amountUsdc
    ) {
      continue;
    }
    creditOf(userId).unsettledCentsDelta -= row.amountCents;
    confirmedRefs.push(row.ref);
    // Refund credit the vault held (a refund recorded when the debt was lower) pays part of it.
    const creditCents = spend.creditUsedUsdc / USDC_PER_CENT;
    transfers.push({
      ref: chainLedgerRef(event),
      kind: 'settlement',
      userId,
      entries: [
        { account: 'user_unsettled', userId, amountCents: -row.amountCents },
        { account: 'user_debt_onchain', userId, amountCents: row.amountCents - creditCents },
        ...(creditCents === 0n
          ? []
          : [{ account: 'user_refund_credit_onchain', userId, amountCents: creditCents }]),
      ],
    });
    touched.unsettledMoves.push({
      userId,
      eventKey: `settle:${row.ref}:${logKey(event)}`,
      amountCents: -row.amountCents,
    });
  }
}

/** Books the refunds the chain recorded: each that matches one of ours. */
async function bookRefunds(tx: Tx, writes: EffectWrites, touched: Touched): Promise<void> {
  const { refunds, creditOf, confirmedRefunds, transfers } = writes;
  // A refund moves its cents back from on-chain debt to unsettled, where the lifecycle credited it
  // when Stripe refunded: unsettled never stays below zero, and debt + unsettled is unchanged.
  const refundRows = await refundsByRef(
    tx,
    refunds.map((r) => r.effect.refund?.ref ?? ''),
  );
  for (const { event, effect, userId } of refunds) {
    const refund = effect.refund;
    const row = refund === undefined ? undefined : refundRows.get(refund.ref);
    if (
      refund === undefined ||
      row === undefined ||
      row.userId !== userId ||
      row.amountUsdc !== refund.amountUsdc
    ) {
      continue;
    }
    creditOf(userId).unsettledCentsDelta += row.amountCents;
    confirmedRefunds.push(row.ref);
    // Debt cents rounded down, as for repayments; the rest is credit held by the vault.
    const debtCents = refund.debtReducedUsdc / USDC_PER_CENT;
    transfers.push({
      ref: chainLedgerRef(event),
      kind: 'refund',
      userId,
      entries: [
        { account: 'user_unsettled', userId, amountCents: row.amountCents },
        { account: 'user_debt_onchain', userId, amountCents: -debtCents },
        ...(row.amountCents === debtCents
          ? []
          : [{ account: 'user_refund_credit_onchain', userId, amountCents: debtCents - row.amountCents }]),
      ],
    });
    touched.unsettledMoves.push({
      userId,
      eventKey: `refund:${row.ref}:${logKey(event)}`,
      amountCents: row.amountCents,
    });
  }
}

/** Books repayments and liquidations: on-chain debt down by whole cents. */
function bookReductions(writes: EffectWrites): void {
  const { reductions, transfers } = writes;
  for (const { event, effect, userId } of reductions) {
    const reduction = effect.debtReduction;
    if (reduction === undefined) continue;
    // Cents rounded down: the ledger never shows less debt than the chain holds.
    const cents = reduction.amountUsdc / USDC_PER_CENT;
    if (cents === 0n) continue;
    transfers.push({
      ref: chainLedgerRef(event),
      kind: reduction.kind,
      userId,
      entries: [
        { account: 'user_debt_onchain', userId, amountCents: -cents },
        {
          account: reduction.kind === 'repayment' ? 'program_repayments' : 'program_liquidations',
          userId: null,
          amountCents: cents,
        },
      ],
    });
  }
}

/** Reverses, after a reorg, what the forward booking of these spends, refunds and reductions booked. */
async function bookUndo(tx: Tx, writes: EffectWrites, touched: Touched): Promise<void> {
  const { spends, refunds, reductions, creditOf, transfers, reopenedRefs, reopenedRefunds } = writes;
  // Undo exactly what was booked: the forward transfer, found by its ref, is reversed entry by entry.
  const undone = [...spends, ...refunds, ...reductions];
  const booked = await ledgerEntriesByRef(
    tx,
    undone.map((u) => chainLedgerRef(u.event)),
  );
  for (const { event, effect, userId } of undone) {
    const entries = booked.get(chainLedgerRef(event));
    if (entries === undefined) continue;
    transfers.push({
      ref: reorgLedgerRef(event),
      kind: 'adjustment',
      userId,
      entries: entries.map((e) => ({ ...e, amountCents: -e.amountCents })),
    });
    if (effect.refund !== undefined) {
      const unsettled = entries.find((e) => e.account === 'user_unsettled');
      if (unsettled !== undefined) {
        creditOf(userId).unsettledCentsDelta -= unsettled.amountCents;
        reopenedRefunds.push(effect.refund.ref);
        touched.unsettledMoves.push({
          userId,
          eventKey: `unrefund:${effect.refund.ref}:${logKey(event)}`,
          amountCents: -unsettled.amountCents,
        });
      }
    }
    if (effect.spend !== undefined) {
      const unsettled = entries.find((e) => e.account === 'user_unsettled');
      if (unsettled !== undefined) {
        creditOf(userId).unsettledCentsDelta -= unsettled.amountCents;
        reopenedRefs.push(effect.spend.ref);
        touched.unsettledMoves.push({
          userId,
          eventKey: `unsettle:${effect.spend.ref}:${logKey(event)}`,
          amountCents: -unsettled.amountCents,
        });
      }
    }
  }
}

/** Writes everything gathered, in one pipelined round on the transaction's connection. */
async function writeEffects(tx: Tx, writes: EffectWrites): Promise<void> {
  const {
    positions,
    credit,
    priceUpserts,
    priceDeletes,
    confirmedRefs,
    reopenedRefs,
    confirmedRefunds,
    reopenedRefunds,
    transfers,
  } = writes;
  const creditMoves = [...credit.values()].filter(
    (d) => d.debtUsdcDelta !== 0n || d.unsettledCentsDelta !== 0n,
  );
  // Independent writes: postgres.js pipelines them on the transaction's connection.
  await Promise.all([
    addPositionDeltas(
      tx,
      [...positions.values()].filter((d) => d.collateralDelta !== 0n || d.pendingDelta !== 0n),
    ),
    // An account is created on the user's first on-chain event (sent first, so it runs first).
    ensureCreditAccounts(
      tx,
      creditMoves.map((d) => d.userId),
    ),
    addToCreditAccounts(
      tx,
      creditMoves.map((d) => ({
        userId: d.userId,
        debtOnchainUsdc: d.debtUsdcDelta,
        unsettledCents: d.unsettledCentsDelta,
      })),
    ),
    upsertPrices(tx, priceUpserts),
    deletePrices(tx, priceDeletes),
    setSettlementStatus(tx, confirmedRefs, 'confirmed', ['pending', 'sent', 'failed']),
    setSettlementStatus(tx, reopenedRefs, 'sent', ['confirmed']),
    setRefundStatus(tx, confirmedRefunds, 'confirmed', ['pending', 'sent', 'failed']),
    setRefundStatus(tx, reopenedRefunds, 'sent', ['confirmed']),
    insertTransfers(tx, transfers),
  ]);
}

/**
 * Decides which of `fresh` (new events, chain order) apply now, given the events already waiting.
 * Marks them `applied` in place and returns, in chain order, every event to apply now — fresh ones
 * and waiting ones (from `waiting`, or fetched through `earlierWaiting` for a liquidation).
 */
export async function planApply(
  ctx: ApplyContext,
  fresh: EventRecord[],
  waiting: readonly EventRecord[],
  confirmedTip: bigint,
  inForce: Map<string, { answer: bigint; roundId: bigint }>,
  earlierWaiting: (userId: string, before: EventRecord) => Promise<EventRecord[]>,
  sanity: Map<string, PriceSanityState> = new Map(),
  nowS: bigint = BigInt(Math.floor(Date.now() / 1000)),
  held: HeldRound[] = [],
): Promise<{ apply: EventRecord[]; promoted: EventRecord[] }> {
  const apply: EventRecord[] = [];
  const promoted: EventRecord[] = [];
  const promotedKeys = new Set<string>();
  const notePrice = (event: EventRecord, effect: Effect) => {
    const assetId = ctx.assetByAggregator.get(event.address);
    if (assetId === undefined || effect.price === undefined) return;
    const current = inForce.get(assetId);
    if (current === undefined || effect.price.roundId > current.roundId) {
      inForce.set(assetId, { answer: effect.price.answer, roundId: effect.price.roundId });
    }
  };
  // Waiting events that now have their confirmations go first (they are older than any fresh one).
  for (const event of waiting) {
    const effect = effectOfRecord(event);
    if (effect === null || event.blockNumber > confirmedTip) continue;
    if (effect.price !== undefined) notePrice(event, effect);
    apply.push(event);
    promoted.push(event);
    promotedKeys.add(logKey(event));
  }
  for (let i = 0; i < fresh.length; i++) {
    const event = fresh[i] as EventRecord;
    const effect = effectOfRecord(event);
    if (effect === null) continue;
    if (effect.price !== undefined) {
      const assetId = ctx.assetByAggregator.get(event.address);
      if (assetId === undefined) continue;
      const state = sanity.get(assetId);
      if (state !== undefined) {
        const round = effect.price;
        const verdict = judgeRound(round, state, nowS);
        state.previous = round;
        if (verdict !== 'ok') {
          // Held back at first sight: never the price in force (see heldRounds).
          const reference = state.reference;
          const stampS = verdict === 'future' ? 0n : round.updatedAtS;
          const zeroAtS = reference !== null && reference.updatedAtS > stampS ? reference.updatedAtS : stampS;
          heldRounds.set(event, { verdict, zeroAtS });
          held.push({
            assetId,
            verdict,
            ...round,
            blockNumber: event.blockNumber,
            blockHash: event.blockHash,
          });
          event.applied = true;
          apply.push(event);
          if (verdict !== 'spike') inForce.set(assetId, { answer: 0n, roundId: round.roundId });
          continue;
        }
        state.reference = round;
      }
      if (appliesNow(effect, event.blockNumber, confirmedTip, inForce.get(assetId)?.answer)) {
        event.applied = true;
        apply.push(event);
        notePrice(event, effect);
      }
      continue;
    }
    const userId = event.userId;
    if (userId === null) continue;
    if (!appliesNow(effect, event.blockNumber, confirmedTip, undefined)) continue;
    if (effect.appliesEarlierFirst === true && event.blockNumber > confirmedTip) {
      // The liquidation acted on the chain's state before it: bring the user's waiting events in first.
      for (const earlier of await earlierWaiting(userId, event)) {
        if (promotedKeys.has(logKey(earlier))) continue;
        promotedKeys.add(logKey(earlier));
        promoted.push(earlier);
        apply.push(earlier);
      }
      for (let j = 0; j < i; j++) {
        const prior = fresh[j] as EventRecord;
        if (prior.userId === userId && !prior.applied && effectOfRecord(prior) !== null) {
          prior.applied = true;
          apply.push(prior);
        }
      }
    }
    event.applied = true;
    apply.push(event);
  }
  apply.sort(byChainOrder);
  return { apply, promoted };
}

export function toRecord(
  chainId: number,
  log: DecodedLog,
  wallets: ReadonlyMap<string, string>,
): EventRecord {
  const args = argsToJson(log.args);
  const wallet = typeof args['user'] === 'string' ? args['user'] : undefined;
  return {
    chainId,
    blockNumber: log.blockNumber,
    blockHash: log.blockHash,
    logIndex: log.logIndex,
    transactionHash: log.transactionHash,
    address: log.address,
    eventName: log.eventName,
    args,
    userId: wallet === undefined ? null : (wallets.get(wallet) ?? null),
    applied: false,
  };
}

/**
 * The work on a fetched range that needs no database: records, their effects, their COPY lines. The
 * runtime runs it as soon as a prefetched range arrives, while the previous range is committing.
 */
export function prepareRecords(chainId: number, logs: readonly DecodedLog[]): EventRecord[] {
  const records = logs.map((log) => toRecord(chainId, log, new Map()));
  for (const record of records) effectOfRecord(record);
  prepareForInsert(records);
  return records;
}

export interface RangeInput {
  from: bigint;
  to: BlockHeader;
  headers: readonly BlockHeader[];
  logs: readonly DecodedLog[];
  head: bigint;
  /** prepareRecords(logs), when the caller already made them. */
  records?: EventRecord[];
}

/** Commits one range: events, effects, blocks and the cursor, in the caller's transaction. */
export async function commitRange(
  tx: Tx,
  ctx: ApplyContext,
  input: RangeInput,
  touched: Touched,
): Promise<void> {
  await lockChainApply(tx, ctx.chainId, LIMITS.rangeCommitTimeoutMs);
  const wallets = new Set<string>();
  for (const log of input.logs) {
    const user = log.args['user'];
    if (typeof user === 'string') wallets.add(user.toLowerCase());
  }
  const fresh = input.records ?? prepareRecords(ctx.chainId, input.logs);
  const confirmedTip = confirmedTipOf(input.head, ctx.confirmations);
  const windowLow = input.from - BigInt(ctx.reorgDepthMax) - 1n;
  // Every asset with a feed: whether a waiting round is among them is only known after the query.
  const [walletMap, waiting, prices, sanity] = await Promise.all([
    walletUsers(tx, ctx.chainId, [...wallets]),
    waitingEvents(
      tx,
      ctx.chainId,
      windowLow < 0n ? 0n : windowLow,
      confirmedTip < input.from - 1n ? confirmedTip : input.from - 1n,
    ),
    pricesInForce(tx, [...new Set(ctx.assetByAggregator.values())]),
    fresh.some((r) => r.eventName === 'AnswerUpdated')
      ? priceSanityState(tx, ctx.chainId, ctx.assetByAggregator, input.from, windowLow < 0n ? 0n : windowLow)
      : new Map<string, PriceSanityState>(),
  ]);
  // Users are resolved here, under the apply lock, so a wallet linked meanwhile is never missed.
  for (const record of fresh) {
    const wallet = record.args['user'];
    record.userId = typeof wallet === 'string' ? (walletMap.get(wallet) ?? null) : null;
  }
  const inForce = new Map(
    [...prices.entries()].map(([id, p]) => [id, { answer: p.answer, roundId: p.roundId }]),
  );
  const { apply, promoted } = await planApply(
    ctx,
    fresh,
    waiting,
    confirmedTip,
    inForce,
    (userId, before) =>
      waitingEventsOfUserBefore(tx, ctx.chainId, userId, windowLow < 0n ? 0n : windowLow, {
        blockNumber: input.from,
        logIndex: 0,
      }).then((rows) => rows.filter((r) => byChainOrder(r, before) < 0)),
    sanity,
    BigInt(Math.floor(Date.now() / 1000)),
    touched.heldRounds,
  );
  const stored = await insertEvents(tx, fresh);
  if (stored !== fresh.length) {
    throw new Error(
      `chain_events: ${fresh.length - stored} event(s) of blocks ${input.from}..${input.to.number} were already stored`,
    );
  }
  await Promise.all([
    markApplied(tx, ctx.chainId, promoted),
    applyEffects(tx, ctx, apply, 1n, touched),
    insertBlocks(tx, ctx.chainId, input.headers),
    // Keep twice the reorg window, so a walk back always finds remembered blocks to compare.
    pruneBlocks(tx, ctx.chainId, input.to.number - 2n * BigInt(ctx.reorgDepthMax) - 1n),
    writeCursor(tx, ctx.cursorId, ctx.chainId, input.to),
  ]);
  touched.stored += stored;
  touched.applied += apply.length;
}

/** Rolls the books back to `ancestor`: undoes the applied orphaned events and forgets all of them. */
export async function commitReorg(
  tx: Tx,
  ctx: ApplyContext,
  reorg: { ancestor: BlockRef; orphanedTip: BlockRef; depth: number },
  touched: Touched,
): Promise<number> {
  await lockChainApply(tx, ctx.chainId);
  const orphaned = await eventsAbove(tx, ctx.chainId, reorg.ancestor.number);
  const applied = orphaned.filter((e) => e.applied);
  await applyEffects(tx, ctx, applied, -1n, touched);
  await deleteEventsAbove(tx, ctx.chainId, reorg.ancestor.number);
  await deleteBlocksAbove(tx, ctx.chainId, reorg.ancestor.number);
  await writeCursor(tx, ctx.cursorId, ctx.chainId, reorg.ancestor);
  await insertAudit(tx, [
    {
      actor: 'indexer',
      action: 'chain_reorg',
      entityType: 'chain',
      entityId: String(ctx.chainId),
      data: {
        ancestor: { number: reorg.ancestor.number.toString(), hash: reorg.ancestor.hash },
        orphanedTip: { number: reorg.orphanedTip.number.toString(), hash: reorg.orphanedTip.hash },
        depth: reorg.depth,
        orphanedEvents: orphaned.length,
        undoneEvents: applied.length,
      },
    },
  ]);
  touched.undone += applied.length;
  return orphaned.length;
}

/** Keys of events, for markApplied and friends. */
export function eventKeys(events: readonly EventRecord[]): { blockHash: Hex; logIndex: number }[] {
  return events.map((e) => ({ blockHash: e.blockHash, logIndex: e.logIndex }));
}
