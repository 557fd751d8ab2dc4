/**
 * What a chaos run records: every authorization request sent and what came back, every lifecycle event
 * Stripe (the harness) generated and each of its deliveries, every price move, every fault with its
 * time. Times are milliseconds since the run started (performance.now() based, monotonic). The checker
 * (checker.ts) reads only this and the facts gathered from Postgres and Redis after the system healed.
 */

export interface ChaosUser {
  userId: string;
  cardId: string;
  /** WETH base units at the start (without the chain, never changed; with it, see `chain.states`). */
  collateralBase: string;
  creditLimitCents: string;
  /** The user's linked wallet on the chain (runs with the chain only). */
  wallet?: string;
}

/** One authorization request (first or incremental) and its answer as the caller saw it. */
export interface RequestRecord {
  eventId: string;
  authorizationId: string;
  userId: string;
  incremental: boolean;
  amountCents: number;
  controllable: boolean;
  sentMs: number;
  /** When the answer came back; null when none did (timeout, reset, refused: Stripe declines). */
  answeredMs: number | null;
  answer: { approved: boolean; amountCents: number; reason: string; decisionId: string } | null;
  /** Which process it went to (for the minimal history). */
  target: string;
  error: string | null;
}

/** A re-sent authorization request (Stripe retrying): the first answer must come back. */
export interface ReplayRecord {
  eventId: string;
  sentMs: number;
  answeredMs: number | null;
  answer: { approved: boolean; amountCents: number; reason: string; decisionId: string } | null;
}

export type LifecycleKind =
  | 'created'
  | 'updated_pending'
  | 'updated_closed'
  | 'updated_reversed'
  | 'updated_expired'
  | 'capture'
  | 'refund';

export interface DeliveryRecord {
  /** The hot path it was sent to (absent in histories from before it was recorded). */
  target?: string;
  sentMs: number;
  ackedMs: number | null;
  status: number;
  body: string;
  /** An operator's resend after a Redis empty restart (the runbook, `RunbookRecord`), not Stripe's own. */
  resend?: boolean;
}

/** A lifecycle event as Stripe generated it, and each delivery of it. */
export interface LifecycleRecord {
  eventId: string;
  kind: LifecycleKind;
  authorizationId: string;
  userId: string;
  /** Authorization events: Stripe's amount (what it approved in all) and whether it approved. */
  amountCents: number;
  approved: boolean;
  requestCount: number;
  /** When Stripe generated it (order of generation per authorization is Stripe's truth). */
  generatedMs: number;
  deliveries: DeliveryRecord[];
}

export interface PriceRecord {
  answerE8: string;
  sentMs: number;
  ackedMs: number | null;
}

export type FaultKind =
  | 'kill_hot_path'
  | 'kill_writer'
  | 'stop_process'
  | 'redis_kill_restart'
  | 'redis_empty_restart'
  | 'postgres_stop_restart'
  | 'redis_stall'
  | 'redis_one_way'
  | 'redis_cut'
  | 'redis_latency'
  | 'postgres_stall'
  | 'postgres_cut'
  | 'postgres_latency'
  | 'kill_indexer'
  | 'kill_settlement'
  | 'kill_liquidator'
  | 'kill_withdrawals'
  | 'stop_chain_worker'
  | 'rpc_stall'
  | 'rpc_cut'
  | 'rpc_latency'
  | 'clock_offset'
  // Redis Cluster mode only (--redis-cluster): a primary SIGKILLed (its replica promoted, then it is
  // started again and rejoins as a replica), or CLUSTER FAILOVER on a primary's replica.
  | 'redis_failover'
  | 'redis_failover_manual';

export interface FaultRecord {
  kind: FaultKind;
  /** Which process or proxy ('hot-path-0', 'writer-0', 'indexer-0', 'all', 'redis', 'postgres'). */
  target: string;
  /** For one-way partitions: which direction was held back; for `clock_offset`: the offset (`+12345ms`). */
  detail: string;
  plannedAtMs: number;
  durationMs: number;
  startedMs: number | null;
  endedMs: number | null;
}

export interface ChaosHistory {
  seed: number;
  durationS: number;
  initialPriceE8: string;
  /** The hot path's FALLBACK_GRANT_CENTS_MAX in this run. */
  fallbackGrantCentsMax: number;
  users: ChaosUser[];
  requests: RequestRecord[];
  replays: ReplayRecord[];
  lifecycle: LifecycleRecord[];
  prices: PriceRecord[];
  faults: FaultRecord[];
  /** Runs with the chain: what the chain said, and when Redis showed it. */
  chain?: ChainHistory;
  /**
   * The operator's recovery the harness played after each `redis_empty_restart` (absent in histories
   * from before it did, and with `--no-runbook`).
   */
  runbooks?: RunbookRecord[];
}

/**
 * The operator's runbook after Redis restarted empty (docs/operations.md "Losing Redis", steps 2–3), as
 * the harness plays it once the fault ended: wait until Redis answers and the writer's lag is 0 (the
 * outbox empty), `npm run cache:warm`, then resend, oldest first and each until acknowledged, every
 * lifecycle event acknowledged from `windowFromMs` until the fault ended (the same event and payload,
 * signed again: Stripe's resend), while the workload goes on.
 */
export interface RunbookRecord {
  /** The fault it follows. */
  faultStartedMs: number;
  faultEndedMs: number;
  /** The window's start: the fault's start less the writer's lag bound (checker `emptyRestartLagMs`). */
  windowFromMs: number;
  startedMs: number;
  /** When Redis answered again and the outbox was seen empty (null: not within the wait; went on anyway). */
  lagZeroMs: number | null;
  /** `cache:warm`: the last attempt's exit, every attempt's output (run again, up to 3 times, after a failure). */
  cacheWarm: {
    startedMs: number;
    endedMs: number | null;
    exit: string;
    output: string;
    attempts?: number;
  } | null;
  resendStartedMs: number | null;
  endedMs: number | null;
  /** The lifecycle events resent, oldest first (their deliveries carry `resend: true`). */
  eventIds: string[];
}

/**
 * One value of a chain quantity as the chain said it: the WETH price (`price`), or a user's WETH
 * collateral (`collateral:<userId>`) or pending withdrawal (`pending:<userId>`) in the vault. The
 * records of a quantity are in the chain's order (the harness sends one chain action at a time).
 */
export interface ChainStateRecord {
  quantity: string;
  value: string;
  cause:
    | 'initial'
    | 'deposit'
    | 'withdrawal_request'
    | 'withdrawal_cancel'
    /** A user's finalizeWithdrawal with the approver's signature (collateral and pending both drop). */
    | 'withdrawal_finalize'
    | 'price'
    | 'reorg'
    /** The liquidator's (read by the harness after it happened; see chain-workload.ts noteLiquidations). */
    | 'liquidation';
  /** When the transaction that made it was sent (a revert's restored value: the revert): it may count from then. */
  sentMs: number;
  /** When Redis first showed it or a later value of the quantity; the value before it may count until then. */
  ackedMs: number | null;
  /** The block it was mined in (null for a value a revert restored). */
  block: string | null;
}

/** A reorg the harness made: evm_snapshot, blocks mined on top, evm_revert, a longer other branch. */
export interface ReorgRecord {
  snapshotMs: number;
  revertedMs: number;
  /** Blocks orphaned. */
  depth: number;
}

export interface ChainHistory {
  states: ChainStateRecord[];
  reorgs: ReorgRecord[];
  /** Chain actions that failed (a revert from the vault, an RPC error): not in `states`. */
  failedActions: string[];
  /** What the liquidator's pressure stream sent (outside spends, deep drops); absent in older histories. */
  pressure?: string[];
  /** The outside spends (`recordSpend` of the deployer) as sent and mined; absent in older histories. */
  outsideSpends?: OutsideSpendRecord[];
  /** Each finalization of a matured request: the approval asked, the finalize sent. Absent in older histories. */
  withdrawals?: WithdrawalRecord[];
}

/** Debt from outside the run's card traffic, recorded on the vault by the deployer (a settler). */
export interface OutsideSpendRecord {
  userId: string;
  amountUsdc: string;
  sentMs: number;
  /** When its receipt came back (it was in a block then, unless a later revert orphaned it). */
  minedMs: number;
  block: string;
}

/**
 * A user finalizing a matured withdrawal as a real one would: ask the withdrawal approver (its internal
 * route, as the API process does) for the EIP-712 approval, then send `finalizeWithdrawal` with it from
 * the user's wallet.
 */
export interface WithdrawalRecord {
  userId: string;
  /** The pending request as the vault held it when the user decided to finalize (read before asking). */
  requestId: string;
  amountBase: string;
  askSentMs: number;
  /** When the approver answered; null when no answer came (it was down, cut off, or too slow). */
  askAnsweredMs: number | null;
  /** approved, refused (HTTP 409, with the reason), or error (no answer, or another status). */
  answer: 'approved' | 'refused' | 'error';
  /** The refusal's reason (`uncovered`, `request_not_indexed`, …) or the error. */
  reason: string;
  /** The approval (approved only). */
  approvedAmountBase?: string;
  approvedRequestId?: string;
  deadline?: string;
  /** finalizeWithdrawal: when it was sent, when its receipt (or error) came back, how it ended. */
  finalizeSentMs?: number;
  finalizeDoneMs?: number;
  finalize?: 'mined' | 'reverted';
  finalizeBlock?: string;
  finalizeError?: string;
}

/** What the chain and the indexed state held at the end (runs with the chain). */
export interface ChainFacts {
  head: string;
  /** Logs of the vault and the feeds on the canonical chain. */
  logsOnChain: number;
  /** chain_events rows: a canonical log missing, a row of no canonical log, a canonical log not applied. */
  missingLogs: string[];
  extraRows: string[];
  unappliedLogs: string[];
  /** Per user: the vault's WETH collateral, pending withdrawal and debt, and what Postgres and Redis hold. */
  vault: Record<
    string,
    {
      chain: { collateral: string; pending: string; debtUsdc: string };
      pg: { collateral: string; pending: string; debtUsdc: string };
      redis: { collateral: string; pending: string; debtUsdc: string };
    }
  >;
  /** Per user: confirmed settlements' cents minus confirmed chain refunds' cents (moved out of unsettled). */
  settledNetCents: Record<string, string>;
  /**
   * Per user: refund cents held for review (−Σ `user_refunds_held`), and the confirmed settlements'
   * cents alone. A refund of a capture already settled on-chain is held, not credited (docs/chain.md
   * "Known limits"): it stays out of unsettled until a person resolves it. Absent in older histories.
   */
  reviewHeldCents?: Record<string, string>;
  settlementsConfirmedCents?: Record<string, string>;
  /** Settlements and chain refunds not confirmed at the end. */
  unconfirmedSettlements: string[];
  /** Rows in the prices table with a block on the canonical chain vs the feed's last answer. */
  priceOnChain: string;
  priceInRedis: string;
  /** The reorgs the indexer followed (audit_log `chain_reorg`): depth and common ancestor. */
  indexerReorgs: { depth: number; ancestor: string }[];
  /** Per user: settlements, chain refunds and the ledger's user_unsettled entries (for a report). */
  settlementLines?: Record<string, string[]>;
  /** The liquidator's work (absent in histories from before it ran in the harness). */
  liquidations?: {
    /** Each canonical `Liquidated` log, with the account just before and just after its block. */
    events: {
      userId: string | null;
      wallet: string;
      block: string;
      transactionHash: string;
      seized: string;
      covered: string;
      before: LiquidationSnapshot;
      after: LiquidationSnapshot;
    }[];
    /** Every `liquidations` row. */
    rows: {
      id: string;
      userId: string;
      status: string;
      transactionHash: string;
      seized: string;
      covered: string;
      lastError: string | null;
    }[];
  };
}

/** A vault account at one block, judged at the feed's answer of that block (liquidator/index.ts accountHealthWad). */
export interface LiquidationSnapshot {
  debtUsdc: string;
  collateralWeth: string;
  priceWethE8: string;
  /** The health factor in WAD, 'no debt', or 'stale'. */
  healthWad: string;
}

/** What Postgres and Redis held after the system healed and drained. */
export interface FinalFacts {
  /** decisions rows by Stripe event id. */
  decisions: Record<string, { approved: boolean; approvedCents: string; source: string; count: number }>;
  /** card_events rows per Stripe event id (lifecycle events and requests). */
  cardEventCounts: Record<string, number>;
  /** ledger_transfers per ref ('hold:<eventId>', 'lifecycle:<eventId>'). */
  transferCounts: Record<string, number>;
  /** Per user: Postgres and Redis holds and unsettled. */
  balances: Record<
    string,
    { pgHolds: string; pgUnsettled: string; redisHolds: string; redisUnsettled: string }
  >;
  /** conservationProblems (Redis = Postgres, ledger explains balances, transfers balance, audit chain). */
  conservation: string[];
  /** Fallback decisions never adopted into Redis, outbox entries and dead letters left. */
  unadoptedFallbacks: number;
  outboxLeft: number;
  deadLetters: number;
  /** The dead letters themselves (first few, fields truncated), to tell why the writer refused them. */
  deadLetterSamples?: string[];
  /** Per authorization with a hold anywhere: Redis's hold and Postgres's held_cents. */
  authorizationHolds?: Record<string, { redis: string; pg: string }>;
  /**
   * Per authorization: the users whose Redis hold set lists it, and the user of its Postgres row (null:
   * no row). Every one must be the user whose card the history used (chaos bug 8).
   */
  authorizationOwners?: Record<string, { redis: string[]; pg: string | null }>;
  /** Runs with the chain. */
  chain?: ChainFacts;
}
