/**
 * The chaos run's checker: reads the recorded history (history.ts) and the facts gathered after the
 * system healed and drained, and returns every violation it finds. Pure: no I/O, so a test can feed it
 * a planted history and see it fail.
 *
 * 1. Credit (Jepsen-bank style). For every approval's answer time T and every user, the credit that
 *    approvals *certainly* hold at T must fit in the most credit the user *could* have had when the
 *    last of them was decided:
 *      Σ over the user's authorizations of exposure(T) ≤ creditUpper([maxSent, T]) + allowance.
 *    exposure(T) is a lower bound of what the system must still count for the authorization: the
 *    grants whose answers came back by T (a lost answer counts 0: Stripe declined it), no more than the
 *    amount of any authorization event of Stripe's *sent* by T, minus every refund sent by T, and 0 once
 *    a release (reversed, expired, closed, or `created` declined) was sent. Whatever the system applied
 *    by T is at least this, since everything here that lowers exposure is counted from the moment it was
 *    first sent and everything that raises it (answers) only once answered; captures move a hold into
 *    unsettled and never lower exposure; over-captures and stand-in approvals raise it and are ignored.
 *    Proof sketch: let ℓ be the latest decision instant among the counted grants (ℓ ≤ T, ℓ ≥ the send
 *    time of each counted grant); at ℓ every counted grant was held and checked against the credit of
 *    that instant, so the sum is at most credit(ℓ). Credit depends only on the WETH price in v1 (no
 *    deposits or withdrawals): a price is possibly in force from when the harness started publishing
 *    it until `priceSlackMs` after the next one was acknowledged (pub/sub reaches every process well
 *    within that; a process cut off from Redis keeps its last price, which the slack does not cover).
 *    allowance: the documented windows of the Postgres fallback (docs/hot-path.md, "Known windows" 1
 *    and 2): while Redis is unreachable the fallback cannot see holds the ledger writer had not yet
 *    booked, bounded per user by FALLBACK_GRANT_CENTS_MAX per outage. The allowance is the smaller of
 *    the fallback-sourced grants in the sum and that cap times the number of faults begun by T.
 * 2. One answer: a replay of an answered request gets the first answer back (unless one of the two is
 *    system_unavailable: nothing was stored, or nothing could be read).
 * 3. Exactly once: every answered decision is in Postgres once, as answered; every lifecycle event (each
 *    was delivered until acknowledged) is in card_events once; no ledger transfer twice; every approval
 *    that granted money has its hold transfer.
 * 4. Balances: Redis = Postgres (conservationProblems, which also checks the books balance and the audit
 *    chain) = the fold of Stripe's events (foldUser) for every user.
 *    And every authorization is only in its own user's Redis hold set and Postgres row (cross_user).
 * 5. Healed: nothing left in the outbox, no dead letters, no fallback decision left unadopted.
 * With the chain (`history.chain`, `facts.chain`):
 * 1'. The credit of (1) comes from the chain: the WETH price and the user's collateral and pending
 *    withdrawal, each value possibly in force from when the transaction that made it was sent (a value
 *    a reorg's revert restored: from the revert) until `priceSlackMs` after Redis first showed a later
 *    value of the same quantity (chain-workload.ts polls Redis). The bound takes the highest price and
 *    collateral and the lowest pending withdrawal possibly in force in the window.
 * 4'. The fold's unsettled is Postgres's and Redis's unsettled plus what settlement moved to on-chain
 *    debt (confirmed settlements less confirmed chain refunds).
 * 6. Chain: every log of the vault and the feed on the canonical chain is in chain_events once (the
 *    primary key makes twice impossible; a missing one is the violation), applied once confirmed; no
 *    row of an orphaned block; per user, the vault's collateral, pending withdrawal and debt = Postgres
 *    = Redis; the feed's last answer = Redis's price; every settlement and chain refund confirmed.
 * 7. Liquidations (checkLiquidations): each canonical `Liquidated` log is one confirmed `liquidations`
 *    row with its amounts, no confirmed row without its log, none left in flight (`sent` or `mined`:
 *    the drain deepens the chain until every receipt is CHAIN_CONFIRMATIONS deep); a failed row (lost,
 *    reverted, or orphaned by a reorg) names no canonical log, by the first rule; none of an account
 *    healthy at the feed's answer just before it; no second one of a user when nothing worsened since
 *    the first left the account healthy.
 * 8. Withdrawals (checkWithdrawalApprovals): no approval the withdrawal approver signed left less than
 *    what the user certainly owed when it decided, at the most favourable chain values possibly in force.
 */
import { borrowPower } from '../../shared/credit.ts';
import { WETH } from '../../test/support/fixtures.ts';
import type {
  ChainFacts,
  ChainHistory,
  ChaosHistory,
  ChaosUser,
  FinalFacts,
  LifecycleRecord,
  RequestRecord,
} from './history.ts';

export type ViolationKind =
  | 'over_credit'
  | 'replay_answer'
  | 'decision_missing'
  | 'decision_mismatch'
  | 'event_not_once'
  | 'transfer_not_once'
  | 'hold_transfer_missing'
  | 'balance_fold'
  | 'conservation'
  | 'cross_user'
  | 'not_healed'
  | 'process_crash'
  | 'chain_log'
  | 'chain_state'
  | 'liquidation_record'
  | 'wrongful_liquidation'
  | 'double_liquidation'
  | 'withdrawal_over_credit';

export interface Violation {
  kind: ViolationKind;
  userId: string | null;
  /** The instant the violation shows (ms since the run started), when it has one. */
  atMs: number | null;
  message: string;
  /** Event ids (requests and lifecycle events) that show it. */
  eventIds: string[];
}

export interface CheckOptions {
  /** How long a superseded price may still be used after its successor was acknowledged. */
  priceSlackMs: number;
  /**
   * How long before a `redis_empty_restart` an answer or an acknowledgement may have been lost with
   * Redis (the ledger writer's lag: p99 ~250 ms under bench load; in chaos runs up to 1.16 s, seed 4 at
   * load 18, the writer still catching up after an earlier restart). A bound tuned to this machine: the
   * writer's real lag at the fault is not recorded.
   */
  emptyRestartLagMs?: number;
}

export const CHECK_DEFAULTS: CheckOptions = { priceSlackMs: 2_000, emptyRestartLagMs: 2_000 };

/**
 * What Redis restarted empty may lose (docs/operations.md "What is lost"; docs/chaos.md, the faults and
 * item 11): the records of decisions and events that Redis had acknowledged and the ledger writer had not
 * written yet. Those are the requests answered, and the lifecycle events acknowledged (every 200 of them),
 * from `emptyRestartLagMs` before a `redis_empty_restart` began until it ended (while Redis is down
 * nothing is answered from it, so an answer inside the fault came before the SIGKILL landed). Returns
 * their event ids; empty in a run without the fault, so every rule stays as strict there.
 *
 * After a fault the harness followed with the operator's runbook (`history.runbooks`: the window's
 * events resent), a lifecycle event is never spared: the resend brings each one back, and one it missed
 * or that is still missing is a violation. What the runbook cannot bring back stays spared: the
 * `decisions` row of a request answered in the window (Stripe's `created` restores the hold, with an
 * authorization row of decision `stripe`, never the decision record itself).
 */
export function lostWithRedis(history: ChaosHistory, lagMs: number): Set<string> {
  const faults = history.faults.filter((f) => f.kind === 'redis_empty_restart' && f.startedMs !== null);
  const windowOf = (f: (typeof faults)[number]) =>
    [(f.startedMs ?? 0) - lagMs, f.endedMs ?? Number.POSITIVE_INFINITY] as const;
  const resent = (f: (typeof faults)[number]) =>
    (history.runbooks ?? []).some((r) => r.faultStartedMs === f.startedMs);
  const windows = faults.map(windowOf);
  const eventWindows = faults.filter((f) => !resent(f)).map(windowOf);
  const within = (ws: (readonly [number, number])[], t: number) =>
    ws.some(([from, to]) => t >= from && t <= to);
  const lost = new Set<string>();
  if (windows.length === 0) return lost;
  for (const r of history.requests)
    if (r.answer !== null && r.answeredMs !== null && within(windows, r.answeredMs)) lost.add(r.eventId);
  for (const e of history.lifecycle) {
    const acks = e.deliveries.flatMap((d) => (d.status === 200 && d.ackedMs !== null ? [d.ackedMs] : []));
    if (acks.length > 0 && acks.every((t) => within(eventWindows, t))) lost.add(e.eventId);
  }
  return lost;
}

/**
 * The runbook's resends (`history.runbooks`): each event resent must have been acknowledged again, and
 * `cache:warm` must have run and succeeded; otherwise the recovery the checker counts on did not happen.
 */
function runbookNotPlayed(history: ChaosHistory): Violation[] {
  const violations: Violation[] = [];
  const byId = new Map(history.lifecycle.map((e) => [e.eventId, e]));
  for (const r of history.runbooks ?? []) {
    const at = `the runbook after the empty restart at ${Math.round(r.faultStartedMs)} ms`;
    if (r.cacheWarm === null || r.cacheWarm.exit !== '0')
      violations.push({
        kind: 'not_healed',
        userId: null,
        atMs: null,
        message: `${at}: cache:warm ${r.cacheWarm === null ? 'not run' : `exit ${r.cacheWarm.exit}: ${r.cacheWarm.output}`}`,
        eventIds: [],
      });
    const unacked = r.eventIds.filter(
      (id) => !(byId.get(id)?.deliveries.some((d) => d.resend === true && d.status === 200) ?? false),
    );
    if (unacked.length > 0)
      violations.push({
        kind: 'not_healed',
        userId: null,
        atMs: null,
        message: `${at}: ${unacked.length} resent events never acknowledged (${unacked.slice(0, 5).join(', ')})`,
        eventIds: unacked.slice(0, 5),
      });
  }
  return violations;
}

const RELEASES = new Set(['updated_closed', 'updated_reversed', 'updated_expired']);

function firstSentMs(event: LifecycleRecord): number | null {
  return event.deliveries.length === 0 ? null : Math.min(...event.deliveries.map((d) => d.sentMs));
}

/** Credit at a price: min(credit limit, borrow power of the user's WETH). */
export function creditAtPrice(collateralBase: bigint, creditLimitCents: bigint, answerE8: bigint): bigint {
  const power = borrowPower({
    holdings: [{ assetId: WETH.assetId, amountBase: collateralBase, pendingWithdrawalBase: 0n }],
    assets: new Map([[WETH.assetId, WETH]]),
    prices: new Map([[WETH.assetId, { answer: answerE8, updatedAtS: 0 }]]),
    nowS: 0,
  }).borrowPowerCents;
  return power < creditLimitCents ? power : creditLimitCents;
}

/** The prices possibly in force at some instant of [fromMs, toMs]. */
export function pricesPossiblyInForce(
  history: Pick<ChaosHistory, 'initialPriceE8' | 'prices'>,
  fromMs: number,
  toMs: number,
  slackMs: number,
): bigint[] {
  const states = [
    { answerE8: history.initialPriceE8, sentMs: Number.NEGATIVE_INFINITY },
    ...history.prices.map((p) => ({ answerE8: p.answerE8, sentMs: p.sentMs })),
  ];
  const out: bigint[] = [];
  for (let i = 0; i < states.length; i++) {
    const next = history.prices[i];
    const endMs =
      next === undefined ? Number.POSITIVE_INFINITY : (next.ackedMs ?? Number.POSITIVE_INFINITY) + slackMs;
    if (states[i]!.sentMs <= toMs && endMs >= fromMs) out.push(BigInt(states[i]!.answerE8));
  }
  return out;
}

/**
 * The values of a chain quantity possibly in force at some instant of [fromMs, toMs]: each from when the
 * transaction that made it was sent (an initial value: always) until `slackMs` after Redis first showed
 * a later value of the quantity (see the header, 1').
 */
export function chainValuesInForce(
  chain: ChainHistory,
  quantity: string,
  fromMs: number,
  toMs: number,
  slackMs: number,
): bigint[] {
  const records = chain.states.filter((s) => s.quantity === quantity);
  const out: bigint[] = [];
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const next = records[i + 1];
    const startMs = r.cause === 'initial' ? Number.NEGATIVE_INFINITY : r.sentMs;
    const endMs =
      next === undefined ? Number.POSITIVE_INFINITY : (next.ackedMs ?? Number.POSITIVE_INFINITY) + slackMs;
    if (startMs <= toMs && endMs >= fromMs) out.push(BigInt(r.value));
  }
  return out;
}

const max = (xs: bigint[]) => xs.reduce((a, b) => (b > a ? b : a), 0n);

/**
 * With the chain: the highest credit the user could have had at some instant of [fromMs, toMs], from the
 * values of the price, collateral and pending withdrawal possibly in force then (see the header, 1').
 */
export function chainCreditUpper(
  chain: ChainHistory,
  user: Pick<ChaosUser, 'userId' | 'creditLimitCents'>,
  fromMs: number,
  toMs: number,
  slackMs: number,
): { creditUpper: bigint; detail: string } {
  const inForce = (quantity: string) => chainValuesInForce(chain, quantity, fromMs, toMs, slackMs);
  const prices = inForce('price');
  const collaterals = inForce(`collateral:${user.userId}`);
  const pendings = inForce(`pending:${user.userId}`);
  const price = max(prices);
  const collateral = max(collaterals);
  const pending = pendings.length === 0 ? 0n : pendings.reduce((a, b) => (b < a ? b : a));
  const net = collateral > pending ? collateral - pending : 0n;
  return {
    creditUpper: creditAtPrice(net, BigInt(user.creditLimitCents), price),
    detail: `prices ${prices.join(', ')}; collateral ${collaterals.join(', ')}; pending ${pendings.join(', ')}`,
  };
}

/** Borrow power of a WETH holding at a price, in cents (the credit model's, no credit limit: the approver's). */
function wethBorrowPowerCents(netBase: bigint, answerE8: bigint): bigint {
  return borrowPower({
    holdings: [{ assetId: WETH.assetId, amountBase: netBase, pendingWithdrawalBase: 0n }],
    assets: new Map([[WETH.assetId, WETH]]),
    prices: new Map([[WETH.assetId, { answer: answerE8, updatedAtS: 0 }]]),
    nowS: 0,
  }).borrowPowerCents;
}

/** USDC units (6 decimals) to cents, rounded down. */
const usdcToCentsFloor = (usdc: bigint) => usdc / 10_000n;
/** USDC units (6 decimals) to cents, rounded up. */
const usdcToCentsUp = (usdc: bigint) => (usdc + 9_999n) / 10_000n;

/**
 * withdrawal_over_credit (see docs/chaos.md, the checker): every approval the withdrawal approver
 * signed (asked at S, answered at A) must leave collateral that covers what the user certainly owed
 * when it decided, at the most favourable chain values possibly in force in [S, A]:
 *
 *   cards + outside − liquidated  ≤  borrowPower(max collateral − amount, max price)
 *
 * cards: Σ exposureAt(auth, S, A) — grants answered by S, less everything Stripe sent by A that lowers
 * them (a decision at any instant of [S, A] saw at least that); captured money stays in it whether
 * settled to on-chain debt or not. outside: the outside spends (on-chain debt, no authorization) whose
 * receipt came by S and that no revert orphaned before A (a reorg whose snapshot preceded the receipt,
 * reverted by A), rounded down to cents. liquidated: every debt a liquidation of the user covered, at
 * any time (canonical logs and `liquidations` rows, rounded up): a liquidation may have covered any of
 * the above. Collateral and price: the highest values possibly in force in [S, A] (chainValuesInForce,
 * the over_credit rule's model); the amount is the approval's. The approver's own rule also counts the
 * pending withdrawal of Redis and Postgres (at least this amount) and no credit limit; neither is
 * relaxed here. Every term errs towards a larger bound, so a correct approver is never flagged.
 */
export function checkWithdrawalApprovals(
  history: ChaosHistory,
  facts: FinalFacts | null,
  options: CheckOptions,
): Violation[] {
  const chain = history.chain;
  if (chain?.withdrawals === undefined) return [];
  const violations: Violation[] = [];
  for (const w of chain.withdrawals) {
    if (w.answer !== 'approved' || w.askAnsweredMs === null) continue;
    const user = history.users.find((u) => u.userId === w.userId);
    if (user === undefined) continue;
    const fromMs = w.askSentMs;
    const toMs = w.askAnsweredMs;
    let cards = 0;
    const eventIds: string[] = [];
    for (const auth of authorizationsOf(history, user.userId)) {
      const e = exposureAt(auth, fromMs, toMs);
      cards += e.exposureCents;
      if (e.exposureCents > 0) eventIds.push(...e.grants.map((r) => r.eventId));
    }
    const outside = (chain.outsideSpends ?? [])
      .filter(
        (o) =>
          o.userId === user.userId &&
          o.minedMs <= fromMs &&
          !chain.reorgs.some((r) => r.snapshotMs <= o.minedMs && r.revertedMs <= toMs),
      )
      .reduce((sum, o) => sum + usdcToCentsFloor(BigInt(o.amountUsdc)), 0n);
    const liquidations = facts?.chain?.liquidations;
    const covers = new Map<string, bigint>();
    for (const e of liquidations?.events ?? [])
      if (e.userId === user.userId) covers.set(e.transactionHash, BigInt(e.covered));
    for (const r of liquidations?.rows ?? [])
      if (r.userId === user.userId && !covers.has(r.transactionHash))
        covers.set(r.transactionHash, BigInt(r.covered));
    const liquidated = [...covers.values()].reduce((sum, c) => sum + usdcToCentsUp(c), 0n);
    const owed = BigInt(cards) + outside - liquidated;
    if (owed <= 0n) continue;
    const prices = chainValuesInForce(chain, 'price', fromMs, toMs, options.priceSlackMs);
    const collaterals = chainValuesInForce(
      chain,
      `collateral:${user.userId}`,
      fromMs,
      toMs,
      options.priceSlackMs,
    );
    const amount = BigInt(w.approvedAmountBase ?? w.amountBase);
    const collateral = max(collaterals);
    const left = collateral > amount ? collateral - amount : 0n;
    const powerUpper = wethBorrowPowerCents(left, max(prices));
    if (owed > powerUpper)
      violations.push({
        kind: 'withdrawal_over_credit',
        userId: user.userId,
        atMs: toMs,
        message: `withdrawal request ${w.requestId} of ${amount} approved (asked ${fromMs.toFixed(0)} ms, answered ${toMs.toFixed(0)} ms) while the user owed at least ${owed} cents (cards ${cards}, outside spends ${outside}, liquidated ${liquidated}) and what stays covered at most ${powerUpper} (collateral ${collaterals.join(', ')}; prices ${prices.join(', ')})`,
        eventIds,
      });
  }
  return violations;
}

interface AuthView {
  authorizationId: string;
  requests: RequestRecord[];
  events: LifecycleRecord[];
}

function authorizationsOf(history: ChaosHistory, userId: string): AuthView[] {
  const byId = new Map<string, AuthView>();
  const view = (id: string) => {
    let v = byId.get(id);
    if (v === undefined) {
      v = { authorizationId: id, requests: [], events: [] };
      byId.set(id, v);
    }
    return v;
  };
  for (const r of history.requests) if (r.userId === userId) view(r.authorizationId).requests.push(r);
  for (const e of history.lifecycle) if (e.userId === userId) view(e.authorizationId).events.push(e);
  return [...byId.values()];
}

const granted = (r: RequestRecord) => (r.answer?.approved === true ? r.answer.amountCents : 0);

/**
 * What an authorization certainly holds at T (see the header), and the send time bounding its decision.
 * `releasesByMs` (default T): the events sent by then lower it (a decision taken somewhere in [T,
 * releasesByMs] may have seen them: the withdrawal rule's window).
 */
export function exposureAt(
  auth: AuthView,
  atMs: number,
  releasesByMs: number = atMs,
): { exposureCents: number; boundSentMs: number; grants: RequestRecord[] } {
  const grants = auth.requests.filter((r) => r.answeredMs !== null && r.answeredMs <= atMs && granted(r) > 0);
  const total = grants.reduce((sum, r) => sum + granted(r), 0);
  if (total === 0) return { exposureCents: 0, boundSentMs: Number.NEGATIVE_INFINITY, grants: [] };
  let cap = total;
  let refunds = 0;
  for (const e of auth.events) {
    const sent = firstSentMs(e);
    if (sent === null || sent > releasesByMs) continue;
    if (RELEASES.has(e.kind) || (e.kind === 'created' && !e.approved)) {
      return { exposureCents: 0, boundSentMs: Number.NEGATIVE_INFINITY, grants: [] };
    }
    if (e.kind === 'created' || e.kind === 'updated_pending') cap = Math.min(cap, e.amountCents);
    if (e.kind === 'refund') refunds += e.amountCents;
  }
  const exposureCents = Math.max(0, Math.min(total, cap) - refunds);
  // When an event or a refund cut the sum, which grants remain in it is unknown: bound by the earliest.
  const sents = grants.map((r) => r.sentMs);
  const boundSentMs = cap < total || refunds > 0 ? Math.min(...sents) : Math.max(...sents);
  return { exposureCents, boundSentMs, grants };
}

export function checkCredit(
  history: ChaosHistory,
  facts: FinalFacts | null,
  options: CheckOptions,
): Violation[] {
  const violations: Violation[] = [];
  for (const user of history.users) {
    const auths = authorizationsOf(history, user.userId);
    const times = history.requests
      .filter((r) => r.userId === user.userId && r.answeredMs !== null && granted(r) > 0)
      .map((r) => r.answeredMs as number)
      .sort((a, b) => a - b);
    for (const atMs of times) {
      let sum = 0;
      let boundSentMs = Number.NEGATIVE_INFINITY;
      let fallbackCents = 0;
      const eventIds: string[] = [];
      for (const auth of auths) {
        const e = exposureAt(auth, atMs);
        if (e.exposureCents === 0) continue;
        sum += e.exposureCents;
        boundSentMs = Math.max(boundSentMs, e.boundSentMs);
        for (const r of e.grants) {
          eventIds.push(r.eventId);
          if (facts?.decisions[r.eventId]?.source === 'postgres') fallbackCents += granted(r);
        }
      }
      let creditUpper = 0n;
      let detail: string;
      if (history.chain !== undefined) {
        const bound = chainCreditUpper(history.chain, user, boundSentMs, atMs, options.priceSlackMs);
        creditUpper = bound.creditUpper;
        detail = bound.detail;
      } else {
        const prices = pricesPossiblyInForce(history, boundSentMs, atMs, options.priceSlackMs);
        for (const p of prices) {
          const c = creditAtPrice(BigInt(user.collateralBase), BigInt(user.creditLimitCents), p);
          if (c > creditUpper) creditUpper = c;
        }
        detail = `prices ${prices.join(', ')}`;
      }
      // A clock offset cuts nobody off from Redis: it opens no fallback blind spot and earns no allowance.
      const faultsBegun = history.faults.filter(
        (f) => f.kind !== 'clock_offset' && f.startedMs !== null && f.startedMs <= atMs,
      ).length;
      const allowance = Math.min(fallbackCents, history.fallbackGrantCentsMax * faultsBegun);
      if (BigInt(sum) > creditUpper + BigInt(allowance)) {
        violations.push({
          kind: 'over_credit',
          userId: user.userId,
          atMs,
          message: `at ${atMs.toFixed(0)} ms approvals hold ${sum} cents, the credit was at most ${creditUpper} (${detail}) + fallback allowance ${allowance}`,
          eventIds,
        });
        break; // One per user: the first instant is the smallest history.
      }
    }
  }
  return violations;
}

/** Stripe's end state of one authorization once every event was applied. */
function foldAuthorization(auth: AuthView): { holdsCents: number; unsettledCents: number } {
  const authEvents = auth.events
    .filter((e) => e.kind !== 'capture' && e.kind !== 'refund')
    .sort((a, b) => a.generatedMs - b.generatedMs);
  const captured = auth.events.filter((e) => e.kind === 'capture').reduce((s, e) => s + e.amountCents, 0);
  const refunded = auth.events.filter((e) => e.kind === 'refund').reduce((s, e) => s + e.amountCents, 0);
  const unsettledCents = captured - refunded;
  const last = authEvents.at(-1);
  // Closed ones are closed after a capture (workload.ts), so closed, reversed and expired all hold 0.
  if (last === undefined || authEvents.some((e) => RELEASES.has(e.kind)) || !last.approved)
    return { holdsCents: 0, unsettledCents };
  return { holdsCents: Math.max(0, last.amountCents - captured), unsettledCents };
}

/** Stripe's end state of one user: holds and unsettled once every event was applied. */
export function foldUser(
  history: ChaosHistory,
  userId: string,
): { holdsCents: number; unsettledCents: number } {
  let holdsCents = 0;
  let unsettledCents = 0;
  for (const auth of authorizationsOf(history, userId)) {
    const f = foldAuthorization(auth);
    holdsCents += f.holdsCents;
    unsettledCents += f.unsettledCents;
  }
  return { holdsCents, unsettledCents };
}

/** Rule 2: a replay of an answered request gets the first answer (the exceptions are in the loop). */
function replayAnswers(
  history: ChaosHistory,
  add: (kind: ViolationKind, eventId: string | null, message: string) => void,
): void {
  const firstAnswer = new Map(history.requests.map((r) => [r.eventId, r.answer]));
  for (const replay of history.replays) {
    const first = firstAnswer.get(replay.eventId);
    if (first == null || replay.answer === null) continue;
    // A request neither decider could decide (system_unavailable) stored no answer: its replay decides
    // afresh; and a replay that finds neither store reachable cannot look the first answer up. Stripe's
    // `created` event says which answer it took, and the fold checks the hold follows it.
    if (first.reason === 'system_unavailable' || replay.answer.reason === 'system_unavailable') continue;
    // A replay whose replica acknowledgement fell short (REDIS_WAIT_REPLICAS) is declined with the first
    // attempt's hold kept (docs/hot-path.md "Replication and failover"): Stripe's `created` says which
    // answer it took, and the fold checks the hold follows it.
    if (replay.answer.reason === 'replication_unconfirmed' && !replay.answer.approved) continue;
    if (JSON.stringify(first) !== JSON.stringify(replay.answer))
      add(
        'replay_answer',
        replay.eventId,
        `replay answered ${JSON.stringify(replay.answer)}, first ${JSON.stringify(first)}`,
      );
  }
}

/**
 * Each user's balances (Postgres and Redis, holds and unsettled) against the fold of their events; a
 * difference names the authorizations whose hold is off.
 */
function checkBalanceFolds(history: ChaosHistory, facts: FinalFacts): Violation[] {
  const violations: Violation[] = [];
  for (const user of history.users) {
    const fold = foldUser(history, user.userId);
    const b = facts.balances[user.userId];
    if (b === undefined) continue;
    // With the chain, settlement moved captured cents out of unsettled into on-chain debt.
    const settled = Number(facts.chain?.settledNetCents[user.userId] ?? '0');
    // And a refund of a capture settlement already took out of unsettled is held for review, not
    // credited (docs/chain.md "Known limits"): the fold credits it, the books hold it apart. Counted
    // back only up to what settlement took: a held refund beyond that is one the product lost.
    const held = Number(facts.chain?.reviewHeldCents?.[user.userId] ?? '0');
    const settledGross = Number(facts.chain?.settlementsConfirmedCents?.[user.userId] ?? '0');
    if (held > settledGross) {
      violations.push({
        kind: 'balance_fold',
        userId: user.userId,
        atMs: null,
        message: `refunds held for review ${held} exceed the confirmed settlements ${settledGross}${settlementDetail(facts, user.userId)}`,
        eventIds: [],
      });
    }
    const seen = {
      pgHolds: Number(b.pgHolds),
      redisHolds: Number(b.redisHolds),
      pgUnsettled: Number(b.pgUnsettled) + settled - held,
      redisUnsettled: Number(b.redisUnsettled) + settled - held,
    };
    if (
      seen.pgHolds !== fold.holdsCents ||
      seen.redisHolds !== fold.holdsCents ||
      seen.pgUnsettled !== fold.unsettledCents ||
      seen.redisUnsettled !== fold.unsettledCents
    ) {
      const detail: string[] = [];
      const shown: string[] = [];
      for (const auth of authorizationsOf(history, user.userId)) {
        const expected = foldAuthorization(auth).holdsCents;
        const held = facts.authorizationHolds?.[auth.authorizationId];
        if (held === undefined) continue; // an old history without per-authorization facts
        if (Number(held.redis) !== expected || Number(held.pg) !== expected) {
          detail.push(`${auth.authorizationId} fold ${expected} Redis ${held.redis} Postgres ${held.pg}`);
          shown.push(...auth.requests.map((r) => r.eventId));
        }
      }
      violations.push({
        kind: 'balance_fold',
        userId: user.userId,
        atMs: null,
        message: `fold(events) ${JSON.stringify(fold)} ≠ ${JSON.stringify(seen)}; holds by authorization: ${detail.join('; ') || 'all equal (unsettled differs)'}${settlementDetail(facts, user.userId)}`,
        // The history shown: the authorizations whose hold is off (the user's whole history when none is).
        eventIds: shown,
      });
    }
  }
  return violations;
}

export function checkHistory(
  history: ChaosHistory,
  facts: FinalFacts,
  options: CheckOptions = CHECK_DEFAULTS,
): Violation[] {
  const violations = checkCredit(history, facts, options);
  violations.push(...checkWithdrawalApprovals(history, facts, options));
  const userOfEvent = new Map<string, string>();
  for (const r of history.requests) userOfEvent.set(r.eventId, r.userId);
  for (const e of history.lifecycle) userOfEvent.set(e.eventId, e.userId);
  const add = (kind: Violation['kind'], eventId: string | null, message: string, userId?: string) =>
    violations.push({
      kind,
      userId: userId ?? (eventId === null ? null : (userOfEvent.get(eventId) ?? null)),
      atMs: null,
      message,
      eventIds: eventId === null ? [] : [eventId],
    });

  // Records Redis lost with its data before the writer wrote them: not counted as missing (lifecycle
  // events only where the runbook's resend was not played). Their money is not excused: the fold of
  // every event Stripe sent stays the measure (a lost decision's hold must come back through Stripe's
  // later events, a lost event's through the operator's resend).
  const lost = lostWithRedis(history, options.emptyRestartLagMs ?? 0);
  const lostEvent = (eventId: string) => lost.has(eventId) && (facts.cardEventCounts[eventId] ?? 0) === 0;

  replayAnswers(history, add);

  for (const r of history.requests) {
    const row = facts.decisions[r.eventId];
    if (row !== undefined && row.count !== 1) add('event_not_once', r.eventId, `${row.count} decision rows`);
    const cardEvents = facts.cardEventCounts[r.eventId] ?? 0;
    if (cardEvents > 1) add('event_not_once', r.eventId, `request in card_events ${cardEvents} times`);
    const holds = facts.transferCounts[`hold:${r.eventId}`] ?? 0;
    if (r.answer === null) continue;
    // Neither decider could decide: nothing was stored, or (docs/hot-path.md, known window 3) a Redis
    // attempt or a COMMIT landed after the deadline; the hold errs towards less credit and Stripe's
    // `created` (declined) releases it, which the balance fold checks.
    if (r.answer.reason === 'system_unavailable' && (row === undefined || !r.answer.approved)) continue;
    if (row === undefined && lost.has(r.eventId)) continue;
    if (row === undefined) {
      add('decision_missing', r.eventId, `answered ${JSON.stringify(r.answer)} but no decision in Postgres`);
      continue;
    }
    // An approval withdrawn because no replica confirmed it (REDIS_WAIT_REPLICAS, docs/hot-path.md
    // "Replication and failover"): the append-only `decisions` row keeps the script's approval and the
    // withdrawal is the card event `unreplicated:<event id>` (with its release transfer). Answered
    // `replication_unconfirmed` with a Redis approval in Postgres is right only with that withdrawal,
    // exactly once; the balance fold checks the hold came back. An answered approval must have none.
    const withdrawals = facts.cardEventCounts[`unreplicated:${r.eventId}`] ?? 0;
    const withdrawn = r.answer.reason === 'replication_unconfirmed' && row.approved && row.source === 'redis';
    if (withdrawn && withdrawals !== 1)
      add(
        'decision_mismatch',
        r.eventId,
        `answered ${JSON.stringify(r.answer)}, Postgres ${JSON.stringify(row)}, withdrawals in card_events: ${withdrawals}`,
      );
    if (!withdrawn && withdrawals > 0)
      add(
        'decision_mismatch',
        r.eventId,
        `answered ${JSON.stringify(r.answer)}, yet withdrawn ${withdrawals} time(s) in card_events`,
      );
    if (withdrawn) continue;
    if (row.approved !== r.answer.approved || Number(row.approvedCents) !== granted(r))
      add(
        'decision_mismatch',
        r.eventId,
        `answered ${JSON.stringify(r.answer)}, Postgres ${JSON.stringify(row)}`,
      );
    if (granted(r) > 0 && holds !== 1) add('hold_transfer_missing', r.eventId, `hold transfers: ${holds}`);
  }
  for (const e of history.lifecycle) {
    const n = facts.cardEventCounts[e.eventId] ?? 0;
    if (n !== 1 && !lostEvent(e.eventId))
      add('event_not_once', e.eventId, `${e.kind} in card_events ${n} times`);
  }
  for (const [ref, n] of Object.entries(facts.transferCounts))
    if (n > 1) add('transfer_not_once', ref.replace(/^[a-z]+:/, ''), `ledger transfer ${ref} ${n} times`);

  violations.push(...checkBalanceFolds(history, facts));
  for (const problem of facts.conservation) {
    const authorizationId = /authorization (\S+) held/.exec(problem)?.[1];
    const shown = history.requests.filter((r) => r.authorizationId === authorizationId).map((r) => r.eventId);
    violations.push({
      kind: 'conservation',
      userId: problem.split(':')[0] ?? null,
      atMs: null,
      message: problem,
      eventIds: shown,
    });
  }
  violations.push(...crossUser(history, facts));
  if (facts.outboxLeft > 0) add('not_healed', null, `${facts.outboxLeft} outbox entries left`);
  if (facts.deadLetters > 0)
    add(
      'not_healed',
      null,
      `${facts.deadLetters} dead letters: ${(facts.deadLetterSamples ?? []).join('\n')}`,
    );
  if (facts.unadoptedFallbacks > 0)
    add('not_healed', null, `${facts.unadoptedFallbacks} fallback decisions never adopted`);
  violations.push(...runbookNotPlayed(history));
  if (facts.chain !== undefined) violations.push(...checkChain(history, facts.chain));
  return violations;
}

/**
 * An authorization in another user's Redis hold set or Postgres row than the user whose card the
 * history used for it (see the header, 4): money of one user's card booked on another's account.
 */
function crossUser(history: ChaosHistory, facts: FinalFacts): Violation[] {
  const owners = facts.authorizationOwners;
  if (owners === undefined) return []; // an old history without the fact
  const ownerOf = new Map<string, string>();
  for (const r of history.requests) ownerOf.set(r.authorizationId, r.userId);
  for (const e of history.lifecycle) ownerOf.set(e.authorizationId, e.userId);
  const violations: Violation[] = [];
  for (const [authorizationId, found] of Object.entries(owners)) {
    const owner = ownerOf.get(authorizationId);
    if (owner === undefined) continue;
    const others = [
      ...found.redis.filter((u) => u !== owner).map((u) => `Redis hold set of ${u}`),
      ...(found.pg !== null && found.pg !== owner ? [`Postgres row of ${found.pg}`] : []),
    ];
    if (others.length === 0) continue;
    violations.push({
      kind: 'cross_user',
      userId: owner,
      atMs: null,
      message: `authorization ${authorizationId} of user ${owner}'s card is in the ${others.join(' and the ')}`,
      eventIds: history.requests.filter((r) => r.authorizationId === authorizationId).map((r) => r.eventId),
    });
  }
  return violations;
}

const REORG_DEPTH_SLACK_BLOCKS = 3;

/** With the chain: the user's settled cents and settlement rows, for a balance_fold report. */
function settlementDetail(facts: FinalFacts, userId: string): string {
  if (facts.chain === undefined) return '';
  const lines = facts.chain.settlementLines?.[userId] ?? [];
  return `; settled net ${facts.chain.settledNetCents[userId] ?? '0'} (${lines.join('; ')})`;
}

/** The chain's end state against the indexed one (see the header, 6). */
export function checkChain(history: ChaosHistory, chain: ChainFacts): Violation[] {
  const violations: Violation[] = [];
  const add = (kind: ViolationKind, userId: string | null, message: string) =>
    violations.push({ kind, userId, atMs: null, message, eventIds: [] });
  const few = (xs: string[]) => `${xs.slice(0, 5).join('; ')}${xs.length > 5 ? ` … (${xs.length})` : ''}`;
  if (chain.missingLogs.length > 0)
    add(
      'chain_log',
      null,
      `${chain.missingLogs.length} canonical logs not in chain_events: ${few(chain.missingLogs)}`,
    );
  if (chain.extraRows.length > 0)
    add(
      'chain_log',
      null,
      `${chain.extraRows.length} chain_events rows of no canonical log: ${few(chain.extraRows)}`,
    );
  if (chain.unappliedLogs.length > 0)
    add(
      'chain_log',
      null,
      `${chain.unappliedLogs.length} confirmed logs never applied: ${few(chain.unappliedLogs)}`,
    );
  for (const user of history.users) {
    const v = chain.vault[user.userId];
    if (v === undefined) continue;
    const a = JSON.stringify(v.chain);
    if (JSON.stringify(v.pg) !== a || JSON.stringify(v.redis) !== a)
      add(
        'chain_state',
        user.userId,
        `vault ${a}, Postgres ${JSON.stringify(v.pg)}, Redis ${JSON.stringify(v.redis)}`,
      );
  }
  // The indexer may meet a reorg before it indexed the orphaned branch's tip (a smaller depth), never a
  // deeper one than the harness made: a deeper rollback undoes canonical events. The settlement worker's
  // transactions mine blocks of their own, so one may land between the harness reading the head and
  // reverting: a few blocks of slack.
  const deepest = Math.max(0, ...(history.chain?.reorgs ?? []).map((r) => r.depth));
  for (const r of chain.indexerReorgs)
    if (r.depth > deepest + REORG_DEPTH_SLACK_BLOCKS)
      add(
        'chain_log',
        null,
        `the indexer rolled back ${r.depth} blocks (to block ${r.ancestor}); the deepest reorg made was ${deepest}`,
      );
  if (chain.priceOnChain !== chain.priceInRedis)
    add(
      'chain_state',
      null,
      `the feed's last answer ${chain.priceOnChain}, Redis's price ${chain.priceInRedis}`,
    );
  if (chain.unconfirmedSettlements.length > 0)
    add('not_healed', null, `settlements not confirmed: ${few(chain.unconfirmedSettlements)}`);
  violations.push(...checkLiquidations(chain));
  return violations;
}

const WAD = 10n ** 18n;

/** Below a health factor of 1 (WAD), as the liquidator judges it ('no debt' and 'stale' are not). */
const unhealthy = (healthWad: string) => /^\d+$/.test(healthWad) && BigInt(healthWad) < WAD;

/**
 * The liquidator's work (see the header, 7): every canonical `Liquidated` log is the transaction of
 * exactly one `liquidations` row, confirmed, with the same amounts; every confirmed row's transaction
 * is a canonical `Liquidated` log; no row left in flight (`sent`, or `mined` and not yet deep); no account liquidated while it was healthy at the
 * feed's answer of the block before (a wrongful liquidation); and no second liquidation of a user when
 * nothing worsened since the first left the account healthy (the same shortfall twice). Indexed once
 * and applied: rule 6 (chain_events, and the vault = Postgres = Redis balances).
 */
export function checkLiquidations(chain: ChainFacts): Violation[] {
  const violations: Violation[] = [];
  const facts = chain.liquidations;
  if (facts === undefined) return violations;
  const add = (kind: ViolationKind, userId: string | null, message: string) =>
    violations.push({ kind, userId, atMs: null, message, eventIds: [] });
  const rowsByHash = new Map<string, typeof facts.rows>();
  for (const r of facts.rows)
    rowsByHash.set(r.transactionHash, [...(rowsByHash.get(r.transactionHash) ?? []), r]);
  const canonical = new Set(facts.events.map((e) => e.transactionHash));
  for (const e of facts.events) {
    const rows = rowsByHash.get(e.transactionHash) ?? [];
    const label = `liquidation of ${e.wallet} in block ${e.block} (${e.transactionHash}, seized ${e.seized}, covered ${e.covered})`;
    if (rows.length !== 1)
      add('liquidation_record', e.userId, `${label}: ${rows.length} liquidations rows name it`);
    else if (
      rows[0]!.status !== 'confirmed' ||
      rows[0]!.seized !== e.seized ||
      rows[0]!.covered !== e.covered
    )
      add(
        'liquidation_record',
        e.userId,
        `${label}: its row is ${rows[0]!.status} (seized ${rows[0]!.seized}, covered ${rows[0]!.covered}, ${rows[0]!.lastError ?? 'no error'})`,
      );
    if (!unhealthy(e.before.healthWad))
      add(
        'wrongful_liquidation',
        e.userId,
        `${label}: before it the account was healthy at the feed's answer (health ${e.before.healthWad}, debt ${e.before.debtUsdc} USDC units, collateral ${e.before.collateralWeth} at ${e.before.priceWethE8})`,
      );
  }
  for (const r of facts.rows) {
    if (r.status === 'sent' || r.status === 'mined')
      add(
        'liquidation_record',
        r.userId,
        `liquidations row ${r.id} (${r.transactionHash}) still ${r.status} at the end`,
      );
    if (r.status === 'confirmed' && !canonical.has(r.transactionHash))
      add(
        'liquidation_record',
        r.userId,
        `liquidations row ${r.id} is confirmed but its transaction ${r.transactionHash} liquidated nothing on the canonical chain`,
      );
  }
  const byUser = new Map<string, typeof facts.events>();
  for (const e of facts.events) byUser.set(e.wallet, [...(byUser.get(e.wallet) ?? []), e]);
  for (const events of byUser.values()) {
    for (let i = 1; i < events.length; i++) {
      const a = events[i - 1]!;
      const b = events[i]!;
      const nothingWorse =
        BigInt(b.before.priceWethE8) >= BigInt(a.after.priceWethE8) &&
        BigInt(b.before.debtUsdc) <= BigInt(a.after.debtUsdc) &&
        BigInt(b.before.collateralWeth) >= BigInt(a.after.collateralWeth);
      if (nothingWorse && !unhealthy(a.after.healthWad))
        add(
          'double_liquidation',
          b.userId,
          `${b.wallet} liquidated in block ${a.block} (health after ${a.after.healthWad}) and again in block ${b.block} with nothing worse between (${b.transactionHash})`,
        );
    }
  }
  return violations;
}

/**
 * The smallest history that shows a violation: the affected user's requests and events up to the
 * violation's instant (everything of the user when it has none), and the faults that overlap them.
 */
export function minimalHistory(history: ChaosHistory, violation: Violation): string[] {
  const lines: { atMs: number; text: string }[] = [];
  const untilMs = violation.atMs ?? Number.POSITIVE_INFINITY;
  const focus = new Set(violation.eventIds);
  const auths = new Set(
    [...history.requests, ...history.lifecycle]
      .filter((x) => focus.has(x.eventId))
      .map((x) => x.authorizationId),
  );
  // A violation about one event shows its authorizations; one about a user's money shows the user.
  const relevant = (x: { userId: string; authorizationId: string }) =>
    auths.size > 0 && violation.atMs === null
      ? auths.has(x.authorizationId)
      : violation.userId !== null && x.userId === violation.userId;
  for (const r of history.requests) {
    if (!relevant(r) || r.sentMs > untilMs) continue;
    const answer =
      r.answer === null
        ? `no answer (${r.error ?? 'lost'})`
        : `${r.answer.reason} ${granted(r)}¢ ${r.answer.decisionId}`;
    lines.push({
      atMs: r.sentMs,
      text: `${r.incremental ? 'increment' : 'request'} ${r.eventId} ${r.authorizationId} ${r.amountCents}¢${r.controllable ? ' (controllable)' : ''} → ${r.target}; answered at ${r.answeredMs?.toFixed(0) ?? '-'}: ${answer}`,
    });
  }
  for (const e of history.lifecycle) {
    if (!relevant(e)) continue;
    for (const d of e.deliveries) {
      if (d.sentMs > untilMs) continue;
      lines.push({
        atMs: d.sentMs,
        text: `deliver ${e.kind} ${e.eventId} ${e.authorizationId} amount ${e.amountCents}¢ approved=${e.approved} requests=${e.requestCount}${d.target === undefined ? '' : ` → ${d.target}`}; ack at ${d.ackedMs?.toFixed(0) ?? '-'}: ${d.status} ${d.body.slice(0, 120)}`,
      });
    }
  }
  for (const p of history.prices) {
    if (p.sentMs <= untilMs)
      lines.push({ atMs: p.sentMs, text: `price ${p.answerE8} (acked ${p.ackedMs?.toFixed(0) ?? '-'})` });
  }
  for (const c of history.chain?.states ?? []) {
    const mine =
      c.quantity === 'price' || (violation.userId !== null && c.quantity.endsWith(`:${violation.userId}`));
    if (!mine || c.cause === 'initial' || c.sentMs > untilMs) continue;
    lines.push({
      atMs: c.sentMs,
      text: `chain ${c.cause} ${c.quantity} = ${c.value} (block ${c.block ?? '-'}, in Redis at ${c.ackedMs?.toFixed(0) ?? '-'})`,
    });
  }
  for (const w of history.chain?.withdrawals ?? []) {
    if (w.userId !== violation.userId || w.askSentMs > untilMs) continue;
    const finalize =
      w.finalize === undefined
        ? ''
        : `; finalize sent ${w.finalizeSentMs?.toFixed(0) ?? '-'}: ${w.finalize} at ${w.finalizeDoneMs?.toFixed(0) ?? '-'} (block ${w.finalizeBlock ?? '-'})`;
    lines.push({
      atMs: w.askSentMs,
      text: `withdrawal approval asked for request ${w.requestId} of ${w.amountBase}; answered at ${w.askAnsweredMs?.toFixed(0) ?? '-'}: ${w.answer} ${w.reason}${finalize}`,
    });
  }
  for (const o of history.chain?.outsideSpends ?? []) {
    if (o.userId === violation.userId && o.sentMs <= untilMs)
      lines.push({
        atMs: o.sentMs,
        text: `outside spend ${o.amountUsdc} USDC units (block ${o.block}, receipt at ${o.minedMs.toFixed(0)})`,
      });
  }
  for (const r of history.chain?.reorgs ?? []) {
    if (r.revertedMs <= untilMs)
      lines.push({
        atMs: r.revertedMs,
        text: `REORG ${r.depth} blocks (snapshot at ${r.snapshotMs.toFixed(0)} ms)`,
      });
  }
  const firstMs = lines.length === 0 ? 0 : Math.min(...lines.map((l) => l.atMs));
  for (const f of history.faults) {
    if (f.startedMs === null || f.startedMs > untilMs) continue;
    if ((f.endedMs ?? Number.POSITIVE_INFINITY) < firstMs) continue;
    lines.push({
      atMs: f.startedMs,
      text: `FAULT ${f.kind} ${f.target} ${f.detail} until ${f.endedMs?.toFixed(0) ?? '-'}`,
    });
  }
  return lines.sort((a, b) => a.atMs - b.atMs).map((l) => `${l.atMs.toFixed(0).padStart(7)} ms  ${l.text}`);
}
