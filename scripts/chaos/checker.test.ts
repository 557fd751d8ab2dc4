// Proves the chaos checker can fail: planted histories with an over-approval (sequential and concurrent),
// a double-applied event, a lost decision, a balance that does not match the fold of Stripe's events and
// an authorization booked under another user are each caught, and a history that is tight but legal (a
// release sent before an approval answered, a price drop the decision may not yet have seen) is not. With
// the chain: an approval beyond the credit a withdrawal request left once Redis showed it, a canonical log
// missing from chain_events, the vault's state off Postgres or Redis, and a rollback deeper than any reorg
// made are caught; an approval within the credit a deposit allowed from when it was sent is not. A Redis
// empty restart spares only the records lost just before it, never their money, and once the operator's
// runbook (the window's events resent) was played, only the decision records. And the liquidator's
// work: a liquidation of a healthy account, a second one for the same shortfall, a row left sent, a
// confirmed row of no canonical log and a log whose row is not confirmed. And the withdrawal approver's
// signatures (withdrawal_over_credit): an approval that leaves less than the card exposure or the outside
// debt is caught; one a release, a price still possibly in force, a revert or a liquidation explains is
// not; a finalization leaves the card credit of over_credit where the request put it.
import { describe, expect, it } from 'vitest';
import { wethForBorrowPower } from '../../test/support/fixtures.ts';
import { CHECK_DEFAULTS, checkHistory, creditAtPrice, foldUser, minimalHistory } from './checker.ts';
import type {
  ChainFacts,
  ChainHistory,
  ChainStateRecord,
  ChaosHistory,
  FinalFacts,
  LifecycleRecord,
  RequestRecord,
  WithdrawalRecord,
} from './history.ts';

const PRICE = 300_000_000_000n;
const USER = '00000000-0000-4000-8000-000000000001';
/** $100 of credit at PRICE. */
const COLLATERAL = wethForBorrowPower(10_000n, PRICE);

function history(parts: Partial<ChaosHistory> = {}): ChaosHistory {
  return {
    seed: 7,
    durationS: 10,
    initialPriceE8: PRICE.toString(),
    fallbackGrantCentsMax: 5_000,
    users: [
      { userId: USER, cardId: 'ic_1', collateralBase: COLLATERAL.toString(), creditLimitCents: '10000000' },
    ],
    requests: [],
    replays: [],
    lifecycle: [],
    prices: [],
    faults: [],
    ...parts,
  };
}

let n = 0;
function approval(
  amountCents: number,
  sentMs: number,
  answeredMs: number,
  authorizationId = `iauth_${++n}`,
): RequestRecord {
  return {
    eventId: `evt_r${++n}`,
    authorizationId,
    userId: USER,
    incremental: false,
    amountCents,
    controllable: false,
    sentMs,
    answeredMs,
    answer: { approved: true, amountCents, reason: 'approved', decisionId: `dec_${n}` },
    target: 'hot-path-0',
    error: null,
  };
}

function event(
  kind: LifecycleRecord['kind'],
  authorizationId: string,
  amountCents: number,
  sentMs: number,
): LifecycleRecord {
  return {
    eventId: `evt_l${++n}`,
    kind,
    authorizationId,
    userId: USER,
    amountCents,
    approved: true,
    requestCount: 1,
    generatedMs: sentMs,
    deliveries: [{ sentMs, ackedMs: sentMs + 5, status: 200, body: '{}' }],
  };
}

/** Facts that agree with the history: every decision and event once, balances as the fold says. */
function factsFor(h: ChaosHistory): FinalFacts {
  const fold = foldUser(h, USER);
  return {
    decisions: Object.fromEntries(
      h.requests.map((r) => [
        r.eventId,
        {
          approved: r.answer?.approved ?? false,
          approvedCents: String(r.answer?.amountCents ?? 0),
          source: 'redis',
          count: 1,
        },
      ]),
    ),
    cardEventCounts: Object.fromEntries([...h.requests, ...h.lifecycle].map((x) => [x.eventId, 1])),
    transferCounts: Object.fromEntries(h.requests.map((r) => [`hold:${r.eventId}`, 1])),
    balances: {
      [USER]: {
        pgHolds: String(fold.holdsCents),
        redisHolds: String(fold.holdsCents),
        pgUnsettled: String(fold.unsettledCents),
        redisUnsettled: String(fold.unsettledCents),
      },
    },
    conservation: [],
    unadoptedFallbacks: 0,
    outboxLeft: 0,
    deadLetters: 0,
  };
}

describe('the chaos checker', () => {
  it('computes the credit the model allows', () => {
    expect(creditAtPrice(COLLATERAL, 10_000_000n, PRICE)).toBe(10_000n);
    expect(creditAtPrice(COLLATERAL, 4_000n, PRICE)).toBe(4_000n);
    expect(creditAtPrice(COLLATERAL, 10_000_000n, PRICE / 2n)).toBe(5_000n);
  });

  it('catches an approval beyond the credit, and prints the seed history that shows it', () => {
    const h = history({ requests: [approval(6_000, 0, 10), approval(5_000, 20, 30)] });
    const violations = checkHistory(h, factsFor(h));
    expect(violations.map((v) => v.kind)).toEqual(['over_credit']);
    expect(violations[0]!.message).toContain('11000 cents');
    const lines = minimalHistory(h, violations[0]!);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toContain('5000¢');
  });

  it('catches two concurrent approvals that together exceed the credit', () => {
    const h = history({ requests: [approval(6_000, 0, 50), approval(6_000, 10, 40)] });
    expect(checkHistory(h, factsFor(h)).map((v) => v.kind)).toEqual(['over_credit']);
  });

  it('accepts an approval that fits once a release sent before its answer is counted', () => {
    const first = approval(8_000, 0, 10);
    const release = event('updated_reversed', first.authorizationId, 8_000, 15);
    // Sent before the second answer came back: the hot path may have applied it first.
    const h = history({ requests: [first, approval(8_000, 12, 20)], lifecycle: [release] });
    expect(checkHistory(h, factsFor(h))).toEqual([]);
    // The same release sent after the answer does not excuse it.
    const late = history({
      requests: [first, approval(8_000, 12, 20)],
      lifecycle: [{ ...release, deliveries: [{ sentMs: 25, ackedMs: 30, status: 200, body: '{}' }] }],
    });
    expect(checkHistory(late, factsFor(late)).map((v) => v.kind)).toEqual(['over_credit']);
  });

  it('allows the old price until shortly after a drop is acknowledged, not beyond', () => {
    const prices = [{ answerE8: (PRICE / 2n).toString(), sentMs: 100, ackedMs: 110 }];
    const soon = history({ prices, requests: [approval(9_000, 120, 130)] });
    expect(checkHistory(soon, factsFor(soon))).toEqual([]);
    const later = history({
      prices,
      requests: [
        approval(9_000, 110 + CHECK_DEFAULTS.priceSlackMs + 50, 110 + CHECK_DEFAULTS.priceSlackMs + 60),
      ],
    });
    expect(checkHistory(later, factsFor(later)).map((v) => v.kind)).toEqual(['over_credit']);
  });

  it('catches an event applied twice, a lost decision, a wrong answer on replay and a balance off the fold', () => {
    const a = approval(1_000, 0, 10);
    const capture = event('capture', a.authorizationId, 400, 20);
    const h = history({
      requests: [a],
      lifecycle: [event('created', a.authorizationId, 1_000, 15), capture],
      replays: [
        { eventId: a.eventId, sentMs: 11, answeredMs: 12, answer: { ...a.answer!, decisionId: 'dec_other' } },
      ],
    });
    const facts = factsFor(h);
    expect(foldUser(h, USER)).toEqual({ holdsCents: 600, unsettledCents: 400 });
    expect(checkHistory(h, factsFor(h)).map((v) => v.kind)).toEqual(['replay_answer']);
    // A replay declined because its replica acknowledgement fell short keeps the hold: not a wrong answer.
    const unconfirmed = { ...a.answer!, approved: false, reason: 'replication_unconfirmed' };
    const shortWait = history({ ...h, replays: [{ ...h.replays[0]!, answer: unconfirmed }] });
    expect(checkHistory(shortWait, factsFor(shortWait)).map((v) => v.kind)).toEqual([]);
    facts.cardEventCounts[capture.eventId] = 2;
    facts.transferCounts[`lifecycle:${capture.eventId}`] = 2;
    delete facts.decisions[a.eventId];
    facts.balances[USER]!.redisHolds = '1000';
    expect(
      checkHistory(h, facts)
        .map((v) => v.kind)
        .sort(),
    ).toEqual(['balance_fold', 'decision_missing', 'event_not_once', 'replay_answer', 'transfer_not_once']);
  });

  it('spares only the records a Redis empty restart lost: answered or acknowledged just before it, their money still checked', () => {
    const emptyRestart = (startedMs: number) => ({
      kind: 'redis_empty_restart' as const,
      target: 'redis',
      detail: '',
      plannedAtMs: startedMs,
      durationMs: 1_000,
      startedMs,
      endedMs: startedMs + 1_000,
    });
    // Answered at 10 and created acknowledged at 20; Redis lost its data at 100: neither reached Postgres.
    const a = approval(1_000, 0, 10);
    const created = event('created', a.authorizationId, 1_000, 15);
    const lost = (h: ChaosHistory) => {
      const facts = factsFor(h);
      delete facts.decisions[a.eventId];
      facts.cardEventCounts[a.eventId] = 0;
      facts.cardEventCounts[created.eventId] = 0;
      return facts;
    };
    const kinds = (h: ChaosHistory, facts: FinalFacts) =>
      checkHistory(h, facts)
        .map((v) => v.kind)
        .sort();
    const within = history({ requests: [a], lifecycle: [created], faults: [emptyRestart(100)] });
    expect(kinds(within, lost(within))).toEqual([]);
    // The same loss without the fault, or with the fault begun beyond the writer's lag: reported.
    const none = history({ requests: [a], lifecycle: [created] });
    expect(kinds(none, lost(none))).toEqual(['decision_missing', 'event_not_once']);
    const later = history({ requests: [a], lifecycle: [created], faults: [emptyRestart(2_100)] });
    expect(kinds(later, lost(later))).toEqual(['decision_missing', 'event_not_once']);
    // Lost, but the hold Stripe's events say is not what Postgres ended with: the fold still reports it.
    const facts = lost(within);
    facts.balances[USER] = { ...facts.balances[USER]!, pgHolds: '0' };
    expect(kinds(within, facts)).toEqual(['balance_fold']);
    // An event applied twice is reported whatever the fault.
    const twice = lost(within);
    twice.cardEventCounts[created.eventId] = 2;
    expect(kinds(within, twice)).toEqual(['event_not_once']);
  });

  it('spares no lifecycle event after the runbook was played: only the decision record, which no resend brings back', () => {
    const emptyRestart = {
      kind: 'redis_empty_restart' as const,
      target: 'redis',
      detail: '',
      plannedAtMs: 100,
      durationMs: 1_000,
      startedMs: 100,
      endedMs: 1_100,
    };
    const a = approval(1_000, 0, 10);
    const created = event('created', a.authorizationId, 1_000, 15);
    // The runbook resent `created` after the fault (acknowledged again at 1,500).
    created.deliveries.push({ sentMs: 1_490, ackedMs: 1_500, status: 200, body: '{}', resend: true });
    const runbook = {
      faultStartedMs: 100,
      faultEndedMs: 1_100,
      windowFromMs: -1_900,
      startedMs: 1_100,
      lagZeroMs: 1_150,
      cacheWarm: { startedMs: 1_150, endedMs: 1_400, exit: '0', output: 'cache:warm: …' },
      resendStartedMs: 1_450,
      endedMs: 1_500,
      eventIds: [created.eventId],
    };
    const h = history({ requests: [a], lifecycle: [created], faults: [emptyRestart], runbooks: [runbook] });
    const kinds = (facts: FinalFacts) =>
      checkHistory(h, facts)
        .map((v) => v.kind)
        .sort();
    // Healed: the decision row lost (spared), the event back in card_events once.
    const healed = factsFor(h);
    delete healed.decisions[a.eventId];
    expect(kinds(healed)).toEqual([]);
    // Planted: the event still missing after its resend is reported, though acknowledged before the loss.
    const missing = factsFor(h);
    delete missing.decisions[a.eventId];
    missing.cardEventCounts[created.eventId] = 0;
    expect(kinds(missing)).toEqual(['event_not_once']);
    // And with only its pre-loss acknowledgement (the resend not recorded on it) it is not spared either.
    const noResendAck = history({
      requests: [a],
      lifecycle: [{ ...created, deliveries: created.deliveries.slice(0, 1) }],
      faults: [emptyRestart],
      runbooks: [runbook],
    });
    const facts = factsFor(noResendAck);
    facts.cardEventCounts[created.eventId] = 0;
    expect(
      checkHistory(noResendAck, facts)
        .map((v) => v.kind)
        .sort(),
    ).toEqual(['event_not_once', 'not_healed']);
    // A runbook whose cache:warm failed is reported.
    const failed = history({
      requests: [a],
      lifecycle: [created],
      faults: [emptyRestart],
      runbooks: [{ ...runbook, cacheWarm: { ...runbook.cacheWarm, exit: '1' } }],
    });
    expect(checkHistory(failed, factsFor(failed)).map((v) => v.kind)).toEqual(['not_healed']);
  });

  it('accepts an approval withdrawn as replication_unconfirmed only with its withdrawal in card_events, once', () => {
    const a = approval(1_000, 0, 10);
    a.answer = {
      approved: false,
      amountCents: 0,
      reason: 'replication_unconfirmed',
      decisionId: a.answer!.decisionId,
    };
    const h = history({ requests: [a], lifecycle: [event('created', a.authorizationId, 0, 15)] });
    h.lifecycle[0]!.approved = false;
    const facts = factsFor(h);
    // The decisions row keeps the script's approval (append-only); the withdrawal is its own card event.
    facts.decisions[a.eventId] = { approved: true, approvedCents: '1000', source: 'redis', count: 1 };
    facts.cardEventCounts[`unreplicated:${a.eventId}`] = 1;
    expect(checkHistory(h, facts)).toEqual([]);
    delete facts.cardEventCounts[`unreplicated:${a.eventId}`];
    expect(checkHistory(h, facts).map((v) => v.kind)).toEqual(['decision_mismatch']);
    // An approval answered as such must never be withdrawn.
    const b = approval(1_000, 0, 10);
    const hb = history({ requests: [b] });
    const factsB = factsFor(hb);
    factsB.cardEventCounts[`unreplicated:${b.eventId}`] = 1;
    expect(checkHistory(hb, factsB).map((v) => v.kind)).toEqual(['decision_mismatch']);
  });

  it("catches an authorization in another user's Redis hold set or Postgres row (chaos bug 8)", () => {
    const a = approval(1_000, 0, 10);
    const h = history({ requests: [a] });
    const other = '00000000-0000-4000-8000-000000000002';
    const facts = factsFor(h);
    facts.authorizationOwners = { [a.authorizationId]: { redis: [USER], pg: USER } };
    expect(checkHistory(h, facts)).toEqual([]);
    facts.authorizationOwners = { [a.authorizationId]: { redis: [USER, other], pg: other } };
    const violations = checkHistory(h, facts);
    expect(violations.map((v) => v.kind)).toEqual(['cross_user']);
    expect(violations[0]!.message).toContain(`Redis hold set of ${other} and the Postgres row of ${other}`);
    expect(violations[0]!.eventIds).toEqual([a.eventId]);
  });

  it('tolerates a fallback over-grant only up to the documented cap', () => {
    const h = history({
      requests: [approval(9_000, 0, 10), approval(3_000, 20, 30)],
      faults: [
        {
          kind: 'redis_stall',
          target: 'all',
          detail: '',
          plannedAtMs: 0,
          durationMs: 100,
          startedMs: 1,
          endedMs: 100,
        },
      ],
    });
    const facts = factsFor(h);
    facts.decisions[h.requests[1]!.eventId]!.source = 'postgres';
    expect(checkHistory(h, facts)).toEqual([]);
    const over = { ...h, fallbackGrantCentsMax: 1_000 };
    expect(checkHistory(over, facts).map((v) => v.kind)).toEqual(['over_credit']);
  });

  it('gives a clock offset no fallback allowance (it cuts nobody off from Redis)', () => {
    const h = history({
      requests: [approval(9_000, 0, 10), approval(3_000, 20, 30)],
      faults: [
        {
          kind: 'clock_offset',
          target: 'hot-path-0',
          detail: '-42000ms',
          plannedAtMs: 0,
          durationMs: 100,
          startedMs: 1,
          endedMs: 100,
        },
      ],
    });
    const facts = factsFor(h);
    facts.decisions[h.requests[1]!.eventId]!.source = 'postgres';
    expect(checkHistory(h, facts).map((v) => v.kind)).toEqual(['over_credit']);
  });

  describe('with the chain', () => {
    const state = (
      quantity: string,
      value: bigint,
      cause: ChainStateRecord['cause'],
      sentMs: number,
      ackedMs: number | null,
    ): ChainStateRecord => ({ quantity, value: value.toString(), cause, sentMs, ackedMs, block: null });
    const initial = [
      state('price', PRICE, 'initial', 0, 0),
      state(`collateral:${USER}`, COLLATERAL, 'initial', 0, 0),
      state(`pending:${USER}`, 0n, 'initial', 0, 0),
    ];
    const chainFacts = (): ChainFacts => ({
      head: '100',
      logsOnChain: 3,
      missingLogs: [],
      extraRows: [],
      unappliedLogs: [],
      vault: {
        [USER]: {
          chain: { collateral: '1', pending: '0', debtUsdc: '0' },
          pg: { collateral: '1', pending: '0', debtUsdc: '0' },
          redis: { collateral: '1', pending: '0', debtUsdc: '0' },
        },
      },
      settledNetCents: {},
      unconfirmedSettlements: [],
      priceOnChain: '1',
      priceInRedis: '1',
      indexerReorgs: [],
    });

    it('counts a withdrawal request from when Redis showed it (plus the slack), not before', () => {
      const chain = {
        states: [...initial, state(`pending:${USER}`, COLLATERAL / 2n, 'withdrawal_request', 100, 110)],
        reorgs: [],
        failedActions: [],
      };
      const soon = history({ chain, requests: [approval(9_000, 120, 130)] });
      expect(checkHistory(soon, factsFor(soon))).toEqual([]);
      const at = 110 + CHECK_DEFAULTS.priceSlackMs + 50;
      const later = history({ chain, requests: [approval(9_000, at, at + 10)] });
      const violations = checkHistory(later, factsFor(later));
      expect(violations.map((v) => v.kind)).toEqual(['over_credit']);
      expect(minimalHistory(later, violations[0]!).join('\n')).toContain('chain withdrawal_request');
      // Never shown in Redis: the old collateral may still count.
      const unseen = history({
        chain: { ...chain, states: [...initial, { ...chain.states[3]!, ackedMs: null }] },
        requests: [approval(9_000, at, at + 10)],
      });
      expect(checkHistory(unseen, factsFor(unseen))).toEqual([]);
    });

    it('allows the credit a deposit adds from when it was sent, and nothing beyond it', () => {
      const chain = {
        states: [...initial, state(`collateral:${USER}`, COLLATERAL * 2n, 'deposit', 100, 500)],
        reorgs: [],
        failedActions: [],
      };
      const h = history({ chain, requests: [approval(19_000, 105, 120)] });
      expect(checkHistory(h, factsFor(h))).toEqual([]);
      const over = history({ chain, requests: [approval(21_000, 105, 120)] });
      expect(checkHistory(over, factsFor(over)).map((v) => v.kind)).toEqual(['over_credit']);
    });

    it('catches a missing log, the vault off Postgres or Redis, and a rollback deeper than any reorg', () => {
      const chain = {
        states: initial,
        reorgs: [{ snapshotMs: 1, revertedMs: 2, depth: 4 }],
        failedActions: [],
      };
      const h = history({ chain });
      const facts = { ...factsFor(h), chain: chainFacts() };
      expect(checkHistory(h, facts)).toEqual([]);
      facts.chain.missingLogs = ['Deposited block 7 0xab:0'];
      facts.chain.vault[USER]!.redis.pending = '5';
      facts.chain.indexerReorgs = [{ depth: 61, ancestor: '9' }];
      facts.chain.priceInRedis = '2';
      expect(
        checkHistory(h, facts)
          .map((v) => v.kind)
          .sort(),
      ).toEqual(['chain_log', 'chain_log', 'chain_state', 'chain_state']);
    });

    it('adds what settlement moved to on-chain debt back into the unsettled the fold expects', () => {
      const a = approval(1_000, 0, 10);
      const h = history({
        chain: { states: initial, reorgs: [], failedActions: [] },
        requests: [a],
        lifecycle: [event('capture', a.authorizationId, 400, 20)],
      });
      const facts = { ...factsFor(h), chain: { ...chainFacts(), settledNetCents: { [USER]: '400' } } };
      facts.balances[USER] = { ...facts.balances[USER]!, pgUnsettled: '0', redisUnsettled: '0' };
      expect(checkHistory(h, facts).filter((v) => v.kind === 'balance_fold')).toEqual([]);
      facts.chain.settledNetCents[USER] = '300';
      expect(checkHistory(h, facts).map((v) => v.kind)).toContain('balance_fold');
    });

    it('counts a refund held for review after settlement back, up to what settlement took', () => {
      const a = approval(1_000, 0, 10);
      const h = history({
        chain: { states: initial, reorgs: [], failedActions: [] },
        requests: [a],
        lifecycle: [
          event('capture', a.authorizationId, 400, 20),
          event('refund', a.authorizationId, 100, 30),
        ],
      });
      // Captured 400, all settled; the refund of 100 came after and was held for review: the books show
      // 0 unsettled and 100 held, the fold 300 unsettled.
      const facts = {
        ...factsFor(h),
        chain: {
          ...chainFacts(),
          settledNetCents: { [USER]: '400' },
          reviewHeldCents: { [USER]: '100' },
          settlementsConfirmedCents: { [USER]: '400' },
        },
      };
      facts.balances[USER] = { ...facts.balances[USER]!, pgUnsettled: '0', redisUnsettled: '0' };
      expect(checkHistory(h, facts).filter((v) => v.kind === 'balance_fold')).toEqual([]);
      // Not held: the books are 100 above the fold.
      facts.chain.reviewHeldCents[USER] = '0';
      expect(checkHistory(h, facts).map((v) => v.kind)).toContain('balance_fold');
      // Held beyond what settlement took out of unsettled: a refund lost, whatever the sums say.
      facts.chain.reviewHeldCents[USER] = '100';
      facts.chain.settlementsConfirmedCents[USER] = '50';
      expect(
        checkHistory(h, facts)
          .map((v) => v.message)
          .join('\n'),
      ).toContain('exceed the confirmed settlements');
    });
    describe('withdrawals', () => {
      const withdrawal = (
        amountBase: bigint,
        askSentMs: number,
        askAnsweredMs: number,
        answer: WithdrawalRecord['answer'] = 'approved',
      ): WithdrawalRecord => ({
        userId: USER,
        requestId: '1',
        amountBase: amountBase.toString(),
        askSentMs,
        askAnsweredMs,
        answer,
        reason: answer === 'approved' ? 'approved' : 'uncovered',
        ...(answer === 'approved' ? { approvedAmountBase: amountBase.toString(), deadline: '9' } : {}),
      });
      const pendingHalf = state(`pending:${USER}`, COLLATERAL / 2n, 'withdrawal_request', 50, 60);
      const chainWith = (parts: Partial<ChainHistory>): ChainHistory => ({
        states: [...initial, pendingHalf],
        reorgs: [],
        failedActions: [],
        outsideSpends: [],
        withdrawals: [],
        ...parts,
      });
      const kinds = (h: ChaosHistory, facts: FinalFacts = factsFor(h)) =>
        checkHistory(h, facts).map((v) => v.kind);

      it('catches an approval that leaves less than the card exposure, and spares one that leaves enough', () => {
        // A grant of 4,000 answered before the ask: what stays after half ($50) covers it.
        const grant = approval(4_000, 10, 20);
        const ok = history({
          chain: chainWith({ withdrawals: [withdrawal(COLLATERAL / 2n, 200, 210)] }),
          requests: [grant],
        });
        expect(kinds(ok)).toEqual([]);
        // 6,000 held: $50 left does not cover it.
        const big = approval(6_000, 10, 20);
        const over = history({
          chain: chainWith({ withdrawals: [withdrawal(COLLATERAL / 2n, 200, 210)] }),
          requests: [big],
        });
        const violations = checkHistory(over, factsFor(over));
        expect(violations.map((v) => v.kind)).toEqual(['withdrawal_over_credit']);
        expect(violations[0]!.message).toContain('cards 6000');
        expect(minimalHistory(over, violations[0]!).join('\n')).toContain(
          'withdrawal approval asked for request 1',
        );
        // Refused, or never answered: nothing was signed.
        for (const answer of ['refused', 'error'] as const) {
          const refused = history({
            chain: chainWith({ withdrawals: [withdrawal(COLLATERAL / 2n, 200, 210, answer)] }),
            requests: [big],
          });
          expect(kinds(refused)).toEqual([]);
        }
        // A grant answered after the ask was sent may not have been reserved when the approver read.
        const late = history({
          chain: chainWith({ withdrawals: [withdrawal(COLLATERAL / 2n, 200, 260)] }),
          requests: [approval(6_000, 190, 230)],
        });
        expect(kinds(late)).toEqual([]);
      });

      it('lets a release Stripe sent before the answer count, and a price only while possibly in force', () => {
        const big = approval(6_000, 10, 20, 'iauth_w1');
        const released = history({
          chain: chainWith({ withdrawals: [withdrawal(COLLATERAL / 2n, 200, 210)] }),
          requests: [big],
          lifecycle: [event('updated_reversed', 'iauth_w1', 6_000, 205)],
        });
        expect(kinds(released)).toEqual([]);
        // The price halves (sent at 100, in Redis at 110): before the slack runs out the old price
        // may still be in force; after it, a quarter withdrawn leaves $37.50 for a grant of 4,000.
        const drop = state('price', PRICE / 2n, 'price', 100, 110);
        const grant = approval(4_000, 10, 20);
        const soon = history({
          chain: chainWith({
            states: [...initial, pendingHalf, drop],
            withdrawals: [withdrawal(COLLATERAL / 4n, 200, 210)],
          }),
          requests: [grant],
        });
        expect(kinds(soon)).toEqual([]);
        const at = 110 + CHECK_DEFAULTS.priceSlackMs + 50;
        const later = history({
          chain: chainWith({
            states: [...initial, pendingHalf, drop],
            withdrawals: [withdrawal(COLLATERAL / 4n, at, at + 10)],
          }),
          requests: [grant],
        });
        expect(kinds(later)).toEqual(['withdrawal_over_credit']);
      });

      it('counts outside spends on the chain, unless a revert may have orphaned them or a liquidation covered them', () => {
        // $30 of debt from outside the card traffic (30,000,000 USDC units), mined at 100.
        const spend = { userId: USER, amountUsdc: '30000000', sentMs: 90, minedMs: 100, block: '9' };
        const half = history({
          chain: chainWith({ outsideSpends: [spend], withdrawals: [withdrawal(COLLATERAL / 2n, 200, 210)] }),
        });
        expect(kinds(half)).toEqual([]);
        const most = history({
          chain: chainWith({
            outsideSpends: [spend],
            withdrawals: [withdrawal((COLLATERAL * 3n) / 4n, 200, 210)],
          }),
        });
        expect(kinds(most)).toEqual(['withdrawal_over_credit']);
        // Mined after a snapshot that was reverted before the answer: maybe gone when the approver read.
        const orphaned = history({
          chain: chainWith({
            outsideSpends: [spend],
            reorgs: [{ snapshotMs: 95, revertedMs: 205, depth: 3 }],
            withdrawals: [withdrawal((COLLATERAL * 3n) / 4n, 200, 210)],
          }),
        });
        expect(kinds(orphaned)).toEqual([]);
        // A liquidation covered $10 of it: $20 owed against $25 left.
        const facts = { ...factsFor(most), chain: chainFacts() };
        facts.chain.vault = {};
        facts.chain.liquidations = {
          events: [],
          rows: [
            {
              id: '1',
              userId: USER,
              status: 'failed',
              transactionHash: '0x9',
              seized: '1',
              covered: '10000000',
              lastError: null,
            },
          ],
        };
        expect(kinds(most, facts)).toEqual([]);
      });

      it('keeps the card credit of the over_credit rule when a finalization takes collateral and pending together', () => {
        // Half requested (in Redis at 60), then finalized at 300: collateral and pending drop together.
        const finalized = [
          ...initial,
          pendingHalf,
          state(`collateral:${USER}`, COLLATERAL / 2n, 'withdrawal_finalize', 300, 310),
          state(`pending:${USER}`, 0n, 'withdrawal_finalize', 300, 310),
        ];
        const at = 310 + CHECK_DEFAULTS.priceSlackMs + 50;
        const fits = history({
          chain: chainWith({ states: finalized }),
          requests: [approval(4_900, at, at + 10)],
        });
        expect(kinds(fits)).toEqual([]);
        const over = history({
          chain: chainWith({ states: finalized }),
          requests: [approval(5_100, at, at + 10)],
        });
        expect(kinds(over)).toEqual(['over_credit']);
      });
    });
    it('catches a liquidation of a healthy account, one twice for the same shortfall, and rows off the chain', () => {
      const snap = (healthWad: string, debtUsdc: string, collateralWeth: string, priceWethE8: string) => ({
        healthWad,
        debtUsdc,
        collateralWeth,
        priceWethE8,
      });
      const event = (block: string, hash: string, before: string, after: string, debtBefore = '100') => ({
        userId: USER,
        wallet: '0xaa',
        block,
        transactionHash: hash,
        seized: '5',
        covered: '7',
        before: snap(before, debtBefore, debtBefore === '100' ? '10' : '5', '2000'),
        after: snap(after, '93', '5', '2000'),
      });
      const row = (id: string, hash: string, status: string) => ({
        id,
        userId: USER,
        status,
        transactionHash: hash,
        seized: '5',
        covered: '7',
        lastError: null,
      });
      const h = history({ chain: { states: initial, reorgs: [], failedActions: [] } });
      const facts = { ...factsFor(h), chain: chainFacts() };
      // Unhealthy before, healthy after, its row confirmed: clean.
      facts.chain.liquidations = {
        events: [event('10', '0x1', '900000000000000000', '1100000000000000000')],
        rows: [row('1', '0x1', 'confirmed')],
      };
      expect(checkHistory(h, facts)).toEqual([]);
      // Healthy before it: wrongful. Again after the first left it healthy, nothing worse: double too.
      facts.chain.liquidations = {
        events: [
          event('10', '0x1', '900000000000000000', '1100000000000000000'),
          event('12', '0x2', '1100000000000000000', '1200000000000000000', '93'),
        ],
        rows: [row('1', '0x1', 'confirmed'), row('2', '0x2', 'confirmed')],
      };
      expect(checkHistory(h, facts).map((v) => v.kind)).toEqual([
        'wrongful_liquidation',
        'double_liquidation',
      ]);
      // A row left sent, one left mined (never CHAIN_CONFIRMATIONS deep), a confirmed row of no
      // canonical log (orphaned by a reorg and never followed), a log whose row is not confirmed.
      facts.chain.liquidations = {
        events: [event('10', '0x1', '900000000000000000', '1100000000000000000')],
        rows: [
          row('1', '0x1', 'failed'),
          row('2', '0x2', 'confirmed'),
          row('3', '0x3', 'sent'),
          row('4', '0x4', 'mined'),
        ],
      };
      expect(
        checkHistory(h, facts)
          .map((v) => v.message)
          .join('\n'),
      ).toMatch(
        /its row is failed[\s\S]*confirmed but its transaction 0x2[\s\S]*still sent[\s\S]*0x4\) still mined/,
      );
      // A liquidation a reorg orphaned, failed, and decided again on the canonical chain: clean.
      facts.chain.liquidations = {
        events: [event('10', '0x2', '900000000000000000', '1100000000000000000')],
        rows: [
          { ...row('1', '0x1', 'failed'), lastError: 'orphaned by a reorg' },
          row('2', '0x2', 'confirmed'),
        ],
      };
      expect(checkHistory(h, facts)).toEqual([]);
    });
  });
});
