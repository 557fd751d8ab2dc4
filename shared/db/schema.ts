/**
 * The financial database's schema (the system of record). drizzle-kit generates `drizzle/*.sql`
 * from this file; what it cannot express (partitioning, triggers, roles, the materialized view)
 * lives in the custom migrations beside them and is typed in `custom-objects.ts`.
 *
 * Money columns are bigint cents (`mode: 'bigint'`) or numeric(78,0) for token base units, which
 * can exceed 2^63; both map to JS bigint. Never `mode: 'number'` for money.
 */
import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  check,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

/** numeric(78,0) ↔ bigint: fits any uint256. */
export const uint256 = customType<{ data: bigint; driverData: string }>({
  dataType: () => 'numeric(78, 0)',
  toDriver: (value) => value.toString(),
  fromDriver: (value) => BigInt(value),
});

/** bytea ↔ Buffer. */
export const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

const cents = (name: string) => bigint(name, { mode: 'bigint' });
const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();
const updatedAt = () => timestamp('updated_at', { withTimezone: true }).notNull().defaultNow();

/**
 * One per Supabase user; the id is the Supabase `auth.users.id`.
 *
 * Who owns which column (docs/controls.md): the program (ops commands, shared/controls/program.ts)
 * owns `status`, `credit_limit_cents` and `daily_limit_ceiling_cents`; the user (through the Supabase
 * bridge) owns `daily_limit_cents` (the limit in force), `daily_limit_pending_*` (an increase waiting
 * out its cool-down) and `blocked_mccs`. The bridge's database role may not write the program's columns.
 * The daily limit a decision uses is min(the user's limit in force, or the pending one once due;
 * the ceiling) — shared/db/queries/controls.ts.
 */
export const users = pgTable(
  'users',
  {
    id: uuid('id').primaryKey(),
    status: text('status', { enum: ['active', 'suspended', 'closed'] })
      .notNull()
      .default('active'),
    creditLimitCents: cents('credit_limit_cents').notNull(),
    dailyLimitCents: cents('daily_limit_cents').notNull(),
    /** An increase the user asked for, applied once `daily_limit_pending_at` has passed. */
    dailyLimitPendingCents: cents('daily_limit_pending_cents'),
    dailyLimitPendingAt: timestamp('daily_limit_pending_at', { withTimezone: true }),
    /** The program's cap on the user's daily limit; null: none (users the bridge did not create). */
    dailyLimitCeilingCents: cents('daily_limit_ceiling_cents'),
    blockedMccs: text('blocked_mccs').array().notNull().default(sql`'{}'::text[]`),
    /**
     * Bumped by every change of a control (user's or program's) in the changing transaction, which
     * holds this row's lock: the write-through to Redis carries it, so an older write arriving late
     * is ignored (shared/redis/account.ts writeControls).
     */
    controlsVersion: bigint('controls_version', { mode: 'bigint' }).notNull().default(sql`0`),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    index('users_updated_at_idx').on(t.updatedAt),
    index('users_daily_limit_pending_at_idx')
      .on(t.dailyLimitPendingAt)
      .where(sql`${t.dailyLimitPendingAt} is not null`),
    check('users_credit_limit_nonneg', sql`${t.creditLimitCents} >= 0`),
    check('users_daily_limit_nonneg', sql`${t.dailyLimitCents} >= 0`),
    check('users_daily_limit_ceiling_nonneg', sql`${t.dailyLimitCeilingCents} >= 0`),
    check(
      'users_daily_limit_pending_pair',
      sql`(${t.dailyLimitPendingCents} is null) = (${t.dailyLimitPendingAt} is null)`,
    ),
  ],
).enableRLS();

/**
 * Stripe Issuing cards. A card is frozen when either switch is on: `frozen` is the user's own (from
 * Supabase card_controls, written by the bridge), `ops_frozen` the program's (ops commands, with who,
 * why and when). The bridge's database role can write only `frozen`, so a user's unfreeze can never
 * undo an ops freeze.
 */
export const cards = pgTable(
  'cards',
  {
    id: text('id').primaryKey(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    status: text('status', { enum: ['active', 'inactive', 'canceled'] })
      .notNull()
      .default('active'),
    frozen: boolean('frozen').notNull().default(false),
    opsFrozen: boolean('ops_frozen').notNull().default(false),
    opsFrozenReason: text('ops_frozen_reason'),
    opsFrozenBy: text('ops_frozen_by'),
    opsFrozenAt: timestamp('ops_frozen_at', { withTimezone: true }),
    last4: text('last4'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [index('cards_updated_at_idx').on(t.updatedAt), index('cards_user_id_idx').on(t.userId)],
).enableRLS();

/** Chain addresses proven by a signed message. One address belongs to one user. */
export const wallets = pgTable(
  'wallets',
  {
    chainId: integer('chain_id').notNull(),
    address: text('address').notNull(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    linkedAt: timestamp('linked_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.chainId, t.address] }),
    index('wallets_user_id_idx').on(t.userId),
    check('wallets_address_lowercase', sql`${t.address} ~ '^0x[0-9a-f]{40}$'`),
  ],
).enableRLS();

/** Collateral assets and their risk parameters. */
export const assets = pgTable(
  'assets',
  {
    id: text('id').primaryKey(),
    chainId: integer('chain_id').notNull(),
    tokenAddress: text('token_address').notNull(),
    tokenDecimals: smallint('token_decimals').notNull(),
    priceFeedAddress: text('price_feed_address').notNull(),
    priceDecimals: smallint('price_decimals').notNull(),
    ltvBps: integer('ltv_bps').notNull(),
    liquidationThresholdBps: integer('liquidation_threshold_bps').notNull(),
    priceAgeMaxS: integer('price_age_max_s').notNull(),
    // Oracle sanity (docs/chain.md "Oracle sanity"): the feed's own minAnswer/maxAnswer (a round
    // outside them counts the asset as worth zero), the largest rise one round may make over the last
    // accepted one before it waits for a following round, and how far in the future a round's
    // timestamp may lie. The defaults only bound what Chainlink's int192 answers can hold; seed real ones.
    priceAnswerMin: uint256('price_answer_min').notNull().default(sql`1`),
    priceAnswerMax: uint256('price_answer_max')
      .notNull()
      .default(sql`3138550867693340381917894711603833208051177722232017256447`),
    priceDeviationMaxBps: integer('price_deviation_max_bps').notNull().default(1000),
    priceFutureSkewS: integer('price_future_skew_s').notNull().default(15),
    enabled: boolean('enabled').notNull().default(true),
    updatedAt: updatedAt(),
  },
  (t) => [
    uniqueIndex('assets_chain_token_idx').on(t.chainId, t.tokenAddress),
    check(
      'assets_bps_range',
      sql`${t.ltvBps} between 0 and ${t.liquidationThresholdBps} and ${t.liquidationThresholdBps} <= 10000`,
    ),
    check(
      'assets_price_sanity',
      sql`${t.priceAnswerMin} >= 1 and ${t.priceAnswerMin} <= ${t.priceAnswerMax} and ${t.priceDeviationMaxBps} > 0 and ${t.priceFutureSkewS} between 0 and 300`,
    ),
    check(
      'assets_decimals_range',
      sql`${t.tokenDecimals} between 0 and 36 and ${t.priceDecimals} between 0 and 36`,
    ),
  ],
);

/** Oracle answers, one row per round. The newest row per asset is the price in force. */
export const prices = pgTable(
  'prices',
  {
    assetId: text('asset_id')
      .notNull()
      .references(() => assets.id),
    roundId: uint256('round_id').notNull(),
    answer: uint256('answer').notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
    blockNumber: bigint('block_number', { mode: 'bigint' }),
  },
  (t) => [
    primaryKey({ columns: [t.assetId, t.roundId] }),
    index('prices_asset_time_idx').on(t.assetId, t.updatedAt.desc()),
  ],
);

/** Collateral per user and asset (a fold of the indexed chain events). */
export const positions = pgTable(
  'positions',
  {
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    assetId: text('asset_id')
      .notNull()
      .references(() => assets.id),
    collateralBase: uint256('collateral_base').notNull().default(sql`0`),
    pendingWithdrawalBase: uint256('pending_withdrawal_base').notNull().default(sql`0`),
    updatedAt: updatedAt(),
  },
  (t) => [
    index('positions_updated_at_idx').on(t.updatedAt),
    primaryKey({ columns: [t.userId, t.assetId] }),
    check('positions_nonneg', sql`${t.collateralBase} >= 0 and ${t.pendingWithdrawalBase} >= 0`),
  ],
).enableRLS();

/**
 * A user's money state: on-chain debt (USDC base units), captured-but-unsettled spend and open holds
 * (cents). The ledger writer keeps it equal to the fold of the ledger entries and to Redis.
 * `version` increases with every change (the Postgres fallback and the rebuild read it).
 */
export const creditAccounts = pgTable(
  'credit_accounts',
  {
    userId: uuid('user_id')
      .primaryKey()
      .references(() => users.id),
    debtOnchainUsdc: uint256('debt_onchain_usdc').notNull().default(sql`0`),
    unsettledCents: cents('unsettled_cents').notNull().default(sql`0`),
    holdsCents: cents('holds_cents').notNull().default(sql`0`),
    version: bigint('version', { mode: 'bigint' }).notNull().default(sql`0`),
    updatedAt: updatedAt(),
  },
  (t) => [
    index('credit_accounts_updated_at_idx').on(t.updatedAt),
    check('credit_accounts_nonneg', sql`${t.holdsCents} >= 0 and ${t.debtOnchainUsdc} >= 0`),
  ],
).enableRLS();

export const AUTHORIZATION_STATUSES = ['pending', 'closed', 'reversed', 'expired'] as const;

/** One row per Stripe authorization (`iauth_…`). */
export const authorizations = pgTable(
  'authorizations',
  {
    id: text('id').primaryKey(),
    userId: uuid('user_id').references(() => users.id),
    cardId: text('card_id').notNull(),
    status: text('status', { enum: AUTHORIZATION_STATUSES }).notNull(),
    approved: boolean('approved').notNull(),
    requestedCents: cents('requested_cents').notNull().default(sql`0`),
    approvedCents: cents('approved_cents').notNull().default(sql`0`),
    heldCents: cents('held_cents').notNull().default(sql`0`),
    capturedCents: cents('captured_cents').notNull().default(sql`0`),
    decision: text('decision', { enum: ['approved', 'partial', 'declined', 'stripe'] }).notNull(),
    declineReason: text('decline_reason'),
    decisionId: text('decision_id'),
    decisionSource: text('decision_source', { enum: ['redis', 'postgres', 'stripe'] }).notNull(),
    decisionLatencyUs: integer('decision_latency_us'),
    merchantCategoryCode: text('merchant_category_code'),
    /**
     * The merchant's name as the card network gave it, sealed (shared/hsm/merchant-names.ts): AES-256-GCM
     * under a data key of `data_keys`, bound to `authorizations.merchant_name:<id>`. Null when there is
     * none, or while its plaintext waits in `merchant_names_unsealed` for the ledger writer to seal it.
     */
    merchantNameSealed: bytea('merchant_name_sealed'),
    expiresAt: timestamp('expires_at', { withTimezone: true }),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    index('authorizations_updated_at_idx').on(t.updatedAt),
    index('authorizations_user_created_idx').on(t.userId, t.createdAt.desc()),
    index('authorizations_open_holds_idx').on(t.expiresAt).where(sql`${t.heldCents} > 0`),
    check(
      'authorizations_amounts_nonneg',
      sql`${t.heldCents} >= 0 and ${t.requestedCents} >= 0 and ${t.approvedCents} >= 0`,
    ),
  ],
).enableRLS();

/** Every decision we made (one per request event; increments add more for one authorization). */
export const decisions = pgTable(
  'decisions',
  {
    id: text('id').primaryKey(),
    eventId: text('event_id').notNull(),
    authorizationId: text('authorization_id').notNull(),
    userId: uuid('user_id'),
    cardId: text('card_id').notNull(),
    approved: boolean('approved').notNull(),
    requestedCents: cents('requested_cents').notNull(),
    approvedCents: cents('approved_cents').notNull(),
    reason: text('reason').notNull(),
    source: text('source', { enum: ['redis', 'postgres'] }).notNull(),
    latencyUs: integer('latency_us').notNull(),
    decidedAt: timestamp('decided_at', { withTimezone: true }).notNull(),
  },
  (t) => [
    index('decisions_decided_at_idx').on(t.decidedAt),
    // The Postgres fallback counts a user's decisions of the last minute and of the day (velocity, daily
    // spend); without it each count scanned every decision of the period (49 fallback decisions/s in
    // npm run bench instead of ~200).
    index('decisions_user_decided_idx').on(t.userId, t.decidedAt),
    uniqueIndex('decisions_event_id_idx').on(t.eventId),
    index('decisions_authorization_idx').on(t.authorizationId),
  ],
).enableRLS();

/** Every indexed chain log, unique on (chain, block hash, log index). */
export const chainEvents = pgTable(
  'chain_events',
  {
    chainId: integer('chain_id').notNull(),
    blockHash: text('block_hash').notNull(),
    logIndex: integer('log_index').notNull(),
    blockNumber: bigint('block_number', { mode: 'bigint' }).notNull(),
    transactionHash: text('transaction_hash').notNull(),
    address: text('address').notNull(),
    eventName: text('event_name').notNull(),
    args: jsonb('args').notNull(),
    userId: uuid('user_id'),
    /** Set when the event has moved credit (deposits wait for confirmations). */
    appliedAt: timestamp('applied_at', { withTimezone: true }),
    createdAt: createdAt(),
  },
  (t) => [
    index('chain_events_created_at_idx').on(t.createdAt),
    primaryKey({ columns: [t.chainId, t.blockHash, t.logIndex] }),
    index('chain_events_block_idx').on(t.chainId, t.blockNumber),
    index('chain_events_user_idx').on(t.userId, t.blockNumber),
  ],
);

/** Recent canonical blocks, for reorg detection (parent-hash check). */
export const chainBlocks = pgTable(
  'chain_blocks',
  {
    chainId: integer('chain_id').notNull(),
    number: bigint('number', { mode: 'bigint' }).notNull(),
    hash: text('hash').notNull(),
    parentHash: text('parent_hash').notNull(),
    timestamp: bigint('timestamp', { mode: 'bigint' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.chainId, t.number] })],
);

/** Where each indexer stopped; written in the same transaction as the effects of a range. */
export const indexerCursors = pgTable('indexer_cursors', {
  id: text('id').primaryKey(),
  chainId: integer('chain_id').notNull(),
  blockNumber: bigint('block_number', { mode: 'bigint' }).notNull(),
  blockHash: text('block_hash').notNull(),
  updatedAt: updatedAt(),
});

/**
 * Double-entry ledger. A transfer is one money movement; its entries sum to zero (a statement-level
 * trigger in the custom migration enforces it, so all entries of a transfer go in one statement). `ref` is the natural key that
 * makes the movement idempotent (e.g. `hold:iauth_…:0`, `capture:ipi_…`).
 */
export const ledgerTransfers = pgTable(
  'ledger_transfers',
  {
    id: bigserial('id', { mode: 'bigint' }).primaryKey(),
    ref: text('ref').notNull(),
    kind: text('kind', {
      enum: ['hold', 'release', 'capture', 'refund', 'settlement', 'repayment', 'liquidation', 'adjustment'],
    }).notNull(),
    userId: uuid('user_id').references(() => users.id),
    authorizationId: text('authorization_id'),
    createdAt: createdAt(),
  },
  (t) => [
    index('ledger_transfers_created_at_idx').on(t.createdAt),
    uniqueIndex('ledger_transfers_ref_idx').on(t.ref),
    index('ledger_transfers_user_idx').on(t.userId, t.createdAt),
  ],
).enableRLS();

export const ledgerEntries = pgTable(
  'ledger_entries',
  {
    id: bigserial('id', { mode: 'bigint' }).primaryKey(),
    transferId: bigint('transfer_id', { mode: 'bigint' })
      .notNull()
      .references(() => ledgerTransfers.id),
    /** Account code, e.g. `user_holds`, `user_unsettled`, `user_debt_onchain`, `program_card_spend`. */
    account: text('account').notNull(),
    userId: uuid('user_id'),
    amountCents: cents('amount_cents').notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    index('ledger_entries_transfer_idx').on(t.transferId),
    index('ledger_entries_user_account_idx').on(t.userId, t.account),
  ],
).enableRLS();

/** Append-only, hash-chained. The custom migration computes the hashes and refuses UPDATE/DELETE/TRUNCATE. */
export const auditLog = pgTable('audit_log', {
  id: bigserial('id', { mode: 'bigint' }).primaryKey(),
  at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
  actor: text('actor').notNull(),
  action: text('action').notNull(),
  entityType: text('entity_type').notNull(),
  entityId: text('entity_id').notNull(),
  data: jsonb('data').notNull(),
  prevHash: text('prev_hash').notNull().default(''),
  hash: text('hash').notNull().default(''),
}).enableRLS();

/** One row per reconciliation job run, with its findings and repairs. */
export const reconciliationRuns = pgTable(
  'reconciliation_runs',
  {
    id: bigserial('id', { mode: 'bigint' }).primaryKey(),
    job: text('job').notNull(),
    status: text('status', { enum: ['running', 'ok', 'findings', 'failed'] }).notNull(),
    startedAt: timestamp('started_at', { withTimezone: true }).notNull().defaultNow(),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
    checked: integer('checked').notNull().default(0),
    findings: jsonb('findings').notNull().default(sql`'[]'::jsonb`),
    repairs: integer('repairs').notNull().default(0),
    cursor: text('cursor'),
  },
  (t) => [index('reconciliation_runs_job_idx').on(t.job, t.startedAt.desc())],
);

/**
 * On-chain settlement of captured spend: one row per capture (`ipi_…`), recorded by the settlement
 * worker with `recordSpend(user, amount, ref)`. The vault refuses a ref twice, and this row is written
 * before the transaction is sent, so a crash between sending and saving cannot record a capture twice.
 * `receivable`: the user had no linked wallet; the capture was booked to `user_receivable_unlinked`.
 */
export const settlements = pgTable(
  'settlements',
  {
    ref: text('ref').primaryKey(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    amountCents: cents('amount_cents').notNull(),
    amountUsdc: uint256('amount_usdc').notNull(),
    status: text('status', { enum: ['pending', 'sent', 'confirmed', 'failed', 'receivable'] })
      .notNull()
      .default('pending'),
    transactionHash: text('transaction_hash'),
    nonce: integer('nonce'),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [index('settlements_status_idx').on(t.status, t.createdAt)],
).enableRLS();

/**
 * Decisions the Postgres fallback made, kept until a hot-path process has mirrored them into the Redis
 * cache (`adopted_at`). Durable, so a fallback grant reaches Redis even when the process that made it
 * dies; every process adopts all pending rows before it decides from Redis again
 * (hot-path/decision/redis-lease.ts). Declines are kept too, so a replay answers the same.
 */
export const fallbackDecisions = pgTable(
  'fallback_decisions',
  {
    decisionId: text('decision_id').primaryKey(),
    eventId: text('event_id').notNull(),
    authorizationId: text('authorization_id').notNull(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    grantedCents: cents('granted_cents').notNull(),
    holdExpiresAt: timestamp('hold_expires_at', { withTimezone: true }).notNull(),
    /** The answer in the Redis decision key's format: approved|amount|reason|decisionId. */
    stored: text('stored').notNull(),
    /** The lease holder (hot-path process) that decided. */
    decidedBy: text('decided_by').notNull(),
    createdAt: createdAt(),
    adoptedAt: timestamp('adopted_at', { withTimezone: true }),
  },
  (t) => [
    uniqueIndex('fallback_decisions_event_idx').on(t.eventId),
    index('fallback_decisions_pending_idx').on(t.userId).where(sql`adopted_at is null`),
    check('fallback_decisions_granted_nonneg', sql`${t.grantedCents} >= 0`),
  ],
).enableRLS();

/**
 * Leases of the hot-path processes that decide from Redis. A process renews its lease while Redis
 * answers it; the Postgres fallback grants only when no other process holds a live lease, so the two
 * deciders never grant against the same credit (ARCHITECTURE.md invariant 7).
 */
export const redisDeciders = pgTable('redis_deciders', {
  holder: text('holder').primaryKey(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  renewedAt: timestamp('renewed_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * Card refunds sent on-chain by the settlement worker with `recordRefunds(user, amount, ref)`: one row
 * per refund transfer booked by the ledger writer (its credited `user_unsettled` part), written before
 * the transaction is sent; the vault refuses a ref twice. The indexer marks it `confirmed` when it
 * applies the vault's `RefundRecorded` event and moves the cents from on-chain debt back to unsettled.
 */
export const chainRefunds = pgTable(
  'chain_refunds',
  {
    /** The on-chain ref, `refund:<refund transaction id>`. */
    ref: text('ref').primaryKey(),
    /** The ledger transfer that credited the refund (`lifecycle:<event id>`, …). */
    transferRef: text('transfer_ref').notNull(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    amountCents: cents('amount_cents').notNull(),
    amountUsdc: uint256('amount_usdc').notNull(),
    status: text('status', { enum: ['pending', 'sent', 'confirmed', 'failed'] })
      .notNull()
      .default('pending'),
    transactionHash: text('transaction_hash'),
    nonce: integer('nonce'),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    uniqueIndex('chain_refunds_transfer_ref_idx').on(t.transferRef),
    index('chain_refunds_status_idx').on(t.status, t.createdAt),
    check('chain_refunds_amount_pos', sql`${t.amountCents} > 0`),
  ],
).enableRLS();

/**
 * Withdrawal approvals the program signed (EIP-712, checked by the vault's `finalizeWithdrawal`): what
 * was approved and the exposure and remaining borrow power it was judged on. An audit trail; the
 * vault's request id is the approval's nonce.
 */
export const withdrawalApprovals = pgTable(
  'withdrawal_approvals',
  {
    id: bigserial('id', { mode: 'bigint' }).primaryKey(),
    chainId: integer('chain_id').notNull(),
    requestId: uint256('request_id').notNull(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    account: text('account').notNull(),
    assetId: text('asset_id').notNull(),
    amountBase: uint256('amount_base').notNull(),
    deadline: timestamp('deadline', { withTimezone: true }).notNull(),
    exposureCents: cents('exposure_cents').notNull(),
    borrowPowerAfterCents: cents('borrow_power_after_cents').notNull(),
    createdAt: createdAt(),
  },
  (t) => [index('withdrawal_approvals_request_idx').on(t.chainId, t.requestId)],
).enableRLS();

/**
 * Liquidations the liquidator service sent (`npm run start:liquidator`). A row is written, with the
 * signed transaction's hash and nonce, before the broadcast; at most one is in flight per user, and a
 * lost transaction is replaced with the same nonce, so two can never both be mined. The indexer books
 * the vault's `Liquidated` event; this row is the service's own record.
 *
 * Status: `sent` (broadcast, no receipt) → `mined` (a receipt, not yet CHAIN_CONFIRMATIONS deep) →
 * `confirmed` (successful and deep) or `failed` (reverted, refused, lost, or orphaned by a reorg and
 * gone). `sent` and `mined` are in flight; a `mined` row whose block a reorg dropped is `sent` again, and
 * so is a `confirmed` one while its block is within REORG_DEPTH_MAX of the head (liquidator/reconcile.ts).
 * `block_number` is the receipt's block; `confirmed_at` is set once, when first confirmed.
 */
export const liquidations = pgTable(
  'liquidations',
  {
    id: bigserial('id', { mode: 'bigint' }).primaryKey(),
    chainId: integer('chain_id').notNull(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id),
    account: text('account').notNull(),
    assetId: text('asset_id').notNull(),
    collateralSeizedBase: uint256('collateral_seized_base').notNull(),
    debtCoveredUsdc: uint256('debt_covered_usdc').notNull(),
    healthFactorWad: uint256('health_factor_wad').notNull(),
    status: text('status', { enum: ['sent', 'mined', 'confirmed', 'failed'] }).notNull(),
    transactionHash: text('transaction_hash').notNull(),
    nonce: integer('nonce').notNull(),
    lastError: text('last_error'),
    blockNumber: bigint('block_number', { mode: 'bigint' }),
    confirmedAt: timestamp('confirmed_at', { withTimezone: true }),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    uniqueIndex('liquidations_in_flight_idx').on(t.chainId, t.userId).where(sql`status in ('sent', 'mined')`),
    index('liquidations_status_idx').on(t.status, t.createdAt),
  ],
).enableRLS();

/**
 * Data keys of envelope encryption (shared/hsm/envelope.ts, docs/operations.md "Encryption at rest"):
 * AES-256 keys, each stored only wrapped — AES-GCM inside the HSM under the key-encryption key
 * labelled `kek_label`, as iv (12) ‖ ciphertext (32) ‖ tag (16), bound to its id. A sealed value names
 * its data key's id. The newest key seals; every key opens what it sealed. Rotation (`npm run keys --
 * rotate`) re-wraps every row under a new key-encryption key. No service role is granted this table
 * until it seals or opens (drizzle/0011_data_keys.sql).
 */
export const dataKeys = pgTable(
  'data_keys',
  {
    id: integer('id').primaryKey().generatedByDefaultAsIdentity(),
    kekLabel: text('kek_label').notNull(),
    wrappedKey: bytea('wrapped_key').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    rewrappedAt: timestamp('rewrapped_at', { withTimezone: true }),
  },
  (t) => [check('data_keys_wrapped_length', sql`octet_length(${t.wrappedKey}) = 60`)],
);

/**
 * Merchant names not sealed yet (docs/operations.md "Encryption at rest"): written, in the transaction
 * of the authorization row, by the hot path's Postgres fallback (which never holds a data key) and by
 * the ledger writer while it holds none (the token unreachable); the ledger writer seals them into
 * `authorizations.merchant_name_sealed` and deletes them as soon as it holds a data key. Only those two
 * roles may touch it — never support.
 */
export const merchantNamesUnsealed = pgTable(
  'merchant_names_unsealed',
  {
    authorizationId: text('authorization_id')
      .primaryKey()
      .references(() => authorizations.id),
    merchantName: text('merchant_name').notNull(),
    createdAt: createdAt(),
  },
  (t) => [index('merchant_names_unsealed_created_idx').on(t.createdAt)],
);

/**
 * Fences of the ledger writers' outbox shards (ledger-writer/shards.ts, docs/redis-layout.md):
 * one row per outbox stream, whose `epoch` a writer raises when it takes the shard over. Every
 * transaction a writer commits for a shard first reads the row `for share` and checks the epoch it took
 * the shard at, so a writer that lost the shard (paused past its Redis lease, then resumed) cannot
 * commit after the new owner raised the epoch; the raise waits for its open transactions.
 */
export const ledgerStreamFences = pgTable('ledger_stream_fences', {
  stream: text('stream').primaryKey(),
  epoch: bigint('epoch', { mode: 'bigint' }).notNull(),
  owner: text('owner').notNull(),
  takenAt: timestamp('taken_at', { withTimezone: true }).notNull().defaultNow(),
});
