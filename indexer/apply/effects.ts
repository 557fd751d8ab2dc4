/**
 * What each indexed event does to credit, as pure data: which position, debt or price it moves and
 * when it may apply. The rule (ARCHITECTURE.md invariant 4): credit shrinks fast, grows slow. An
 * effect that lowers a user's available credit applies at first sight; one that raises it waits for
 * the configured confirmations. Effects are additive deltas, so a position is the sum of its applied
 * events' deltas and undoing an orphaned event is exact subtraction, in any order.
 *
 * | event               | effect                                            | applies                   |
 * | ------------------- | ------------------------------------------------- | ------------------------- |
 * | Deposited           | collateral +amount                                | after confirmations       |
 * | WithdrawalRequested | pending withdrawal +amount                        | at first sight            |
 * | WithdrawalCancelled | pending withdrawal −amount                        | after confirmations       |
 * | WithdrawalFinalized | collateral −amount, pending −amount (net zero)    | after confirmations       |
 * | SpendRecorded       | debt +(amount − refund credit used); unsettled    | at first sight            |
 * |                     | −capture (if ours)                                |                           |
 * | RefundRecorded      | debt −reduced; unsettled +refund (if ours)        | at first sight            |
 * | Repaid              | debt −amount                                      | after confirmations       |
 * | Liquidated          | collateral −seized, pending −cut, debt −covered   | at first sight, and first |
 * |                     |                                                   | applies the user's earlier|
 * |                     |                                                   | waiting events            |
 * | AnswerUpdated       | price row                                         | a drop (≤ the price in    |
 * |                     |                                                   | force) at first sight, a  |
 * |                     |                                                   | rise after confirmations  |
 * |                     | (a round failing `judgeRound` never becomes the   | held back at first sight  |
 * |                     | price: out of bounds or future → a zero row)      |                           |
 *
 * A finalized withdrawal leaves available credit unchanged (collateral and pending fall together),
 * so it waits: applying it early could take collateral below zero while the deposit that funded it
 * is still waiting. A liquidation applies the user's earlier waiting events first for the same reason.
 */
import assert from 'node:assert/strict';
import type { Address, Hex } from 'viem';

export type Timing = 'now' | 'confirmed' | 'now-if-drop';

export interface Effect {
  timing: Timing;
  /** The vault user (lowercase address) the event concerns; null for price events. */
  wallet: Address | null;
  position?: { token: Address; collateralDelta: bigint; pendingDelta: bigint };
  debtUsdcDelta?: bigint;
  /** A spend recorded on-chain; `ref` is the capture id the settlement worker sent. */
  spend?: { ref: string; amountUsdc: bigint; creditUsedUsdc: bigint };
  /** A refund recorded on-chain; `ref` is the refund ref the settlement worker sent. */
  refund?: { ref: string; amountUsdc: bigint; debtReducedUsdc: bigint };
  /** Debt that left the books other than by a spend (ledgered in cents). */
  debtReduction?: { kind: 'repayment' | 'liquidation'; amountUsdc: bigint };
  price?: { answer: bigint; roundId: bigint; updatedAtS: bigint };
  /** A liquidation applies the user's earlier waiting events before itself. */
  appliesEarlierFirst?: boolean;
}

type Args = Readonly<Record<string, unknown>>;

function big(args: Args, name: string): bigint {
  const value = args[name];
  assert.ok(
    typeof value === 'bigint' ||
      (typeof value === 'string' && /^-?\d+$/.test(value)) ||
      typeof value === 'number',
    `event argument ${name} is not an integer`,
  );
  return BigInt(value);
}

function addr(args: Args, name: string): Address {
  const value = args[name];
  assert.ok(
    typeof value === 'string' && /^0x[0-9a-fA-F]{40}$/.test(value),
    `event argument ${name} is not an address`,
  );
  return value.toLowerCase() as Address;
}

function str(args: Args, name: string): string {
  const value = args[name];
  assert.ok(typeof value === 'string', `event argument ${name} is not a string`);
  return value;
}

/** The effect of one decoded event, or null when it moves no credit (roles, parameters). */
export function effectOf(eventName: string, args: Args): Effect | null {
  switch (eventName) {
    case 'Deposited':
      return {
        timing: 'confirmed',
        wallet: addr(args, 'user'),
        position: { token: addr(args, 'token'), collateralDelta: big(args, 'amount'), pendingDelta: 0n },
      };
    case 'WithdrawalRequested':
      return {
        timing: 'now',
        wallet: addr(args, 'user'),
        position: { token: addr(args, 'token'), collateralDelta: 0n, pendingDelta: big(args, 'amount') },
      };
    case 'WithdrawalCancelled':
      return {
        timing: 'confirmed',
        wallet: addr(args, 'user'),
        position: { token: addr(args, 'token'), collateralDelta: 0n, pendingDelta: -big(args, 'amount') },
      };
    case 'WithdrawalFinalized': {
      const amount = big(args, 'amount');
      return {
        timing: 'confirmed',
        wallet: addr(args, 'user'),
        position: { token: addr(args, 'token'), collateralDelta: -amount, pendingDelta: -amount },
      };
    }
    case 'SpendRecorded': {
      const amountUsdc = big(args, 'amountUsdc');
      // Absent in events of the vault before refunds reached the chain.
      const creditUsedUsdc = args['creditUsedUsdc'] === undefined ? 0n : big(args, 'creditUsedUsdc');
      return {
        timing: 'now',
        wallet: addr(args, 'user'),
        debtUsdcDelta: amountUsdc - creditUsedUsdc,
        spend: { ref: str(args, 'ref'), amountUsdc, creditUsedUsdc },
      };
    }
    case 'RefundRecorded': {
      // Never raises credit: the debt falls by at most what unsettled rises by (the lifecycle already
      // credited the refund), so it applies at first sight, in order with the spends.
      const debtReducedUsdc = big(args, 'debtReducedUsdc');
      return {
        timing: 'now',
        wallet: addr(args, 'user'),
        debtUsdcDelta: -debtReducedUsdc,
        refund: { ref: str(args, 'ref'), amountUsdc: big(args, 'amountUsdc'), debtReducedUsdc },
      };
    }
    case 'Repaid': {
      const amountUsdc = big(args, 'amountUsdc');
      return {
        timing: 'confirmed',
        wallet: addr(args, 'user'),
        debtUsdcDelta: -amountUsdc,
        debtReduction: { kind: 'repayment', amountUsdc },
      };
    }
    case 'Liquidated': {
      const covered = big(args, 'debtCoveredUsdc');
      return {
        timing: 'now',
        wallet: addr(args, 'user'),
        position: {
          token: addr(args, 'token'),
          collateralDelta: -big(args, 'collateralSeized'),
          pendingDelta: -big(args, 'pendingWithdrawalReduced'),
        },
        debtUsdcDelta: -covered,
        debtReduction: { kind: 'liquidation', amountUsdc: covered },
        appliesEarlierFirst: true,
      };
    }
    case 'AnswerUpdated':
      return {
        timing: 'now-if-drop',
        wallet: null,
        price: {
          answer: big(args, 'current'),
          roundId: big(args, 'roundId'),
          updatedAtS: big(args, 'updatedAt'),
        },
      };
    default:
      return null;
  }
}

/**
 * Oracle sanity (docs/chain.md "Oracle sanity"; ARCHITECTURE.md invariant 10): what a new round is.
 *
 * - `out_of_bounds`: outside the feed's [minAnswer, maxAnswer] (a Chainlink feed freezes at its bound in
 *   a crash, so the true price may be anywhere beyond it);
 * - `future`: stamped more than the asset's skew ahead of our clock (a future stamp would also keep the
 *   round "fresh" for longer than its heartbeat);
 * - `spike`: a rise of more than `deviationMaxBps` over the last accepted round, not confirmed by the
 *   round just before it (a held spike within the deviation of this one confirms it);
 * - `ok`: everything else, drops of any size included (credit shrinks fast).
 *
 * Only `ok` rounds can become the price in force. `out_of_bounds` and `future` rounds make the asset
 * worth zero until a later ok round applies; a `spike` leaves the last accepted (lower) price in force.
 */
export type RoundVerdict = 'ok' | 'out_of_bounds' | 'future' | 'spike';

export interface OracleRound {
  roundId: bigint;
  answer: bigint;
  updatedAtS: bigint;
}

export interface RoundJudgeState {
  answerMin: bigint;
  answerMax: bigint;
  deviationMaxBps: bigint;
  futureSkewS: number;
  /** The last accepted round (applied or waiting for confirmations), or null before the first. */
  reference: OracleRound | null;
  /** The feed's round just before this one, whatever its verdict. */
  previous: OracleRound | null;
}

const BPS_ONE = 10_000n;

/** `answer` lies more than `bps` above `base`. */
function risesBeyond(answer: bigint, base: bigint, bps: bigint): boolean {
  return answer * BPS_ONE > base * (BPS_ONE + bps);
}

/** `answer` lies within `bps` of `base`, either way. */
function within(answer: bigint, base: bigint, bps: bigint): boolean {
  const gap = answer > base ? answer - base : base - answer;
  return gap * BPS_ONE <= base * bps;
}

/** The verdict on a new round. Pure: `nowS` is the only input not taken from the chain. */
export function judgeRound(round: OracleRound, state: RoundJudgeState, nowS: bigint): RoundVerdict {
  const inBounds = (answer: bigint) => answer >= state.answerMin && answer <= state.answerMax;
  if (!inBounds(round.answer)) return 'out_of_bounds';
  if (round.updatedAtS > nowS + BigInt(state.futureSkewS)) return 'future';
  const reference = state.reference;
  if (reference === null || !risesBeyond(round.answer, reference.answer, state.deviationMaxBps)) return 'ok';
  // A legitimate jump is followed by further rounds at about the same level (Chainlink publishes at
  // least every heartbeat): the second round in a row beyond the bound, close to the first, confirms it.
  const previous = state.previous;
  if (
    previous !== null &&
    previous.roundId < round.roundId &&
    previous.updatedAtS <= round.updatedAtS &&
    previous.updatedAtS <= nowS + BigInt(state.futureSkewS) &&
    inBounds(previous.answer) &&
    risesBeyond(previous.answer, reference.answer, state.deviationMaxBps) &&
    within(round.answer, previous.answer, state.deviationMaxBps)
  ) {
    return 'ok';
  }
  return 'spike';
}

/**
 * Whether an effect applies now. `confirmedTip` is the highest block with enough confirmations;
 * `priceInForce` is the answer currently used for the event's asset (undefined: none yet).
 */
export function appliesNow(
  effect: Effect,
  blockNumber: bigint,
  confirmedTip: bigint,
  priceInForce: bigint | undefined,
): boolean {
  if (blockNumber <= confirmedTip) return true;
  switch (effect.timing) {
    case 'now':
      return true;
    case 'confirmed':
      return false;
    case 'now-if-drop':
      // A first price raises credit from nothing: it waits like any rise.
      return priceInForce !== undefined && effect.price !== undefined && effect.price.answer <= priceInForce;
  }
}

// The depth rule is shared with the liquidator (one definition): shared/chain/confirmations.ts.
export { confirmedTipOf } from '../../shared/chain/confirmations.ts';

/** JSON form of decoded arguments for chain_events.args: integers as decimal strings, addresses lowercase. */
export function argsToJson(args: Args): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(args)) {
    if (typeof value === 'bigint') out[key] = value.toString();
    else if (typeof value === 'string')
      out[key] = /^0x[0-9a-fA-F]{40}$/.test(value) ? value.toLowerCase() : value;
    else if (typeof value === 'number' || typeof value === 'boolean') out[key] = value;
    else out[key] = String(value);
  }
  return out;
}

/** The stable identity of a chain log (ARCHITECTURE.md invariant 2). */
export function logKey(event: { chainId: number; blockHash: Hex; logIndex: number }): string {
  return `${event.chainId}:${event.blockHash}:${event.logIndex}`;
}
