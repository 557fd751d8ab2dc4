/**
 * Applies outbox entries to the financial database, in two transactions per batch: the money, then
 * the archive.
 *
 * The money transaction holds every effect that must be atomic with its natural key: the ledger
 * transfer keyed by `ref` (`hold:<eventId>` for a decision's hold, the same ref the Postgres fallback
 * books, and `lifecycle:<eventId>` for a lifecycle movement), a decision's row keyed by `event_id`, the
 * balances in credit_accounts and authorizations, and the audit rows. The archive transaction holds
 * the raw Stripe events (card_events, keyed by `(id, created_at)`) and the effects of lifecycle
 * records that move no money (an authorization's status), whose key is their card_events row. The two
 * do not share a transaction, so an event Postgres cannot archive (say, a `\u0000` jsonb refuses)
 * never holds back a money movement, and a money movement Postgres rejects never loses its event.
 * Both are attempted for every batch; a failure of the archive alone is thrown as an ArchiveError, so
 * the writer can tell that the money of such an entry is already written.
 *
 * Exactly once: every key is inserted with ON CONFLICT DO NOTHING in the transaction of its effects,
 * and the effects apply only when the key was new in it. A concurrent writer inserting the same key
 * waits on the unique index until we commit and then finds it taken, so two writers, replays and
 * re-deliveries after a crash never double anything.
 *
 * Postgres applies exactly the deltas Redis made (the stream's outcome fields), never re-derives them:
 * that is what keeps credit_accounts equal to Redis's account hash.
 */
import { z } from 'zod';
import type { Sql, Tx } from '../shared/db/client.ts';
import {
  type AuthorizationWrite,
  supersedeAuthorizationDecisions,
  writeAuthorizations,
} from '../shared/db/queries/authorizations.ts';
import { insertCardEvents as insertCardEventRows } from '../shared/db/queries/card-events.ts';
import { addToCreditAccounts, ensureCreditAccounts } from '../shared/db/queries/credit-accounts.ts';
import {
  insertDecisions as insertDecisionRows,
  replaceFallbackDecisions,
} from '../shared/db/queries/decisions.ts';
import {
  type AuditInput,
  cardMovementEntries,
  insertAudit,
  insertTransfers,
  type TransferInput,
  type TransferKind,
} from '../shared/db/queries/ledger.ts';
import { classifyError, NonRetryableError } from '../shared/errors.ts';
import type { MerchantNames } from '../shared/hsm/merchant-names.ts';
import {
  type DecisionRecord,
  type LifecycleRecord,
  outboxRecordSchema,
  type RawEntry,
} from '../shared/outbox/records.ts';
import {
  HOLD_EXPIRY_DEFAULTS,
  type HoldExpirySettings,
  holdExpiresAtMs,
} from '../shared/policy/hold-expiry.ts';
import { OUTBOX_FIELDS } from '../shared/policy/redis-fields.ts';
import { limits } from './limits.ts';

export interface DecisionItem {
  kind: 'decision';
  record: DecisionRecord;
  approved: boolean;
  approvedCents: bigint;
  requestedCents: bigint;
  reason: string;
}

export interface LifecycleItem {
  kind: 'lifecycle';
  record: LifecycleRecord;
  holdDeltaCents: bigint;
  unsettledDeltaCents: bigint;
  capturedDeltaCents: bigint;
  /** Cents of a credit held for review (REVIEW_ACCOUNT), not credited; and why. */
  reviewCents: bigint;
  reviewReason: string | null;
}

/** A validated entry: the record with the script's outcome fields applied (they override the record). */
export interface ParsedEntry {
  stream: string;
  id: string;
  item: DecisionItem | LifecycleItem;
}

export type ParseResult = { ok: true; entry: ParsedEntry } | { ok: false; error: string };

// The outcome fields the scripts add beside the record, by the names they write (shared/policy).
const F = OUTBOX_FIELDS;
const amount = z.string().regex(/^-?\d{1,16}$/, 'integer cents');
const decisionOutcome = z.object({
  [F.approved]: z.enum(['0', '1']),
  [F.amountCents]: z.string().regex(/^\d{1,16}$/, 'non-negative integer cents'),
  [F.reason]: z.string().min(1).max(64),
});
const lifecycleOutcome = z.object({
  [F.holdDeltaCents]: amount,
  [F.unsettledDeltaCents]: amount,
  [F.capturedDeltaCents]: amount,
  // Absent on entries written before refunds were bounded: nothing held for review.
  // Negative: a later capture made that much of an earlier held refund creditable.
  [F.reviewCents]: amount.default('0'),
  [F.reviewReason]: z.enum(['', 'unlinked', 'beyond_captured', 'settled', 'captured_later']).default(''),
});

/**
 * The ledger account of credits held for review: the part of a refund (or capture reversal) beyond
 * what its authorization captured, or with no authorization. It is owed to nobody until a person
 * decides; it is never spendable credit (credit_accounts and Redis do not see it).
 */
export const REVIEW_ACCOUNT = 'user_refunds_held';

function describe(error: z.ZodError): string {
  const issue = error.issues[0];
  return `${issue?.path.join('.') || 'entry'}: ${issue?.message ?? 'invalid'}`;
}

/**
 * Validates one stream entry (record JSON and outcome fields) and applies the outcome overrides.
 * A failure here is permanent: the entry is poison and goes to the dead-letter stream.
 */
export function parseEntry(raw: RawEntry): ParseResult {
  const json = raw.fields[F.record];
  if (json === undefined) return { ok: false, error: `${F.record}: missing record field` };
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    // JSON.parse of a string throws only SyntaxError: the record is not JSON.
    return { ok: false, error: `${F.record}: not JSON` };
  }
  const parsed = outboxRecordSchema.safeParse(value);
  if (!parsed.success) return { ok: false, error: `record ${describe(parsed.error)}` };
  // The Stripe event (record.event) is not parsed here: Postgres parses it once, into card_events'
  // jsonb. An event that is not JSON fails its batch with a data error, and the entry alone is then
  // found and dead-lettered like any poison entry (writer.ts isolate).
  const record = parsed.data;
  if (record.kind === 'decision') {
    const outcome = decisionOutcome.safeParse(raw.fields);
    if (!outcome.success) return { ok: false, error: `outcome ${describe(outcome.error)}` };
    const approved = outcome.data[F.approved] === '1';
    const approvedCents = BigInt(outcome.data[F.amountCents]);
    const requestedCents = BigInt(record.requestedCents);
    if (!approved && approvedCents !== 0n)
      return { ok: false, error: 'outcome: declined with a granted amount' };
    if (approvedCents > requestedCents) return { ok: false, error: 'outcome: granted more than requested' };
    if (record.userId === null && approvedCents !== 0n)
      return { ok: false, error: 'outcome: a hold without a user' };
    return {
      ok: true,
      entry: {
        stream: raw.stream,
        id: raw.id,
        item: {
          kind: 'decision',
          record,
          approved,
          approvedCents,
          requestedCents,
          reason: outcome.data[F.reason],
        },
      },
    };
  }
  const outcome = lifecycleOutcome.safeParse(raw.fields);
  if (!outcome.success) return { ok: false, error: `outcome ${describe(outcome.error)}` };
  const holdDeltaCents = BigInt(outcome.data[F.holdDeltaCents]);
  const unsettledDeltaCents = BigInt(outcome.data[F.unsettledDeltaCents]);
  const capturedDeltaCents = BigInt(outcome.data[F.capturedDeltaCents]);
  const reviewCents = BigInt(outcome.data[F.reviewCents]);
  if (
    record.userId === null &&
    (holdDeltaCents !== 0n || unsettledDeltaCents !== 0n || capturedDeltaCents !== 0n || reviewCents !== 0n)
  ) {
    return { ok: false, error: 'outcome: a money movement without a user' };
  }
  if (reviewCents !== 0n && record.transactionType === null)
    return { ok: false, error: 'outcome: review cents without a transaction' };
  return {
    ok: true,
    entry: {
      stream: raw.stream,
      id: raw.id,
      item: {
        kind: 'lifecycle',
        record,
        holdDeltaCents,
        unsettledDeltaCents,
        capturedDeltaCents,
        reviewCents,
        reviewReason: outcome.data[F.reviewReason] === '' ? null : outcome.data[F.reviewReason],
      },
    },
  };
}

export interface ApplyOptions {
  /** Hold lifetimes, for the expiry of authorizations first seen through a Stripe event (stand-in). */
  holdExpiry: HoldExpirySettings;
  /**
   * Seals merchant names (shared/hsm/merchant-names.ts). Absent, or answering null (no data key right
   * now), the name of a new authorization is queued in `merchant_names_unsealed` in the same
   * transaction, for seal-queue.ts to seal later: the money never waits on the HSM.
   */
  merchantNames?: MerchantNames | null;
  /**
   * Run first in each transaction, pipelined with its first statements: the stream writer checks that
   * it still owns the entries' shards (shards.ts checkFence) and throws FencedError if not, which rolls
   * the transaction back.
   */
  fence?: ((tx: Tx) => Promise<void>) | undefined;
}

/**
 * The writer no longer owns these streams' shards: another writer took them over (raised their epoch in
 * `ledger_stream_fences`), and this transaction rolled back. Not the data's fault and not to be retried:
 * the entries belong to the new owner now (ledger-writer/shards.ts).
 */
export class FencedError extends Error {
  readonly code = 'LEDGER_FENCED';
  constructor(readonly streams: readonly string[]) {
    super(`outbox shards taken over by another writer: ${streams.join(', ')}`);
    this.name = 'FencedError';
  }
}

export interface ApplyResult {
  /** Records whose effects were applied in this transaction. */
  applied: number;
  /** Records already applied earlier (replays, re-deliveries, a concurrent writer). */
  duplicates: number;
}

function transferOf(entry: ParsedEntry): TransferInput | null {
  const item = entry.item;
  const userId = item.record.userId;
  if (userId === null) return null;
  if (item.kind === 'decision') {
    if (item.approvedCents === 0n) return null;
    return {
      ref: `hold:${item.record.eventId}`,
      kind: 'hold',
      userId,
      authorizationId: item.record.authorizationId,
      entries: cardMovementEntries(userId, { holdDeltaCents: item.approvedCents, unsettledDeltaCents: 0n }),
    };
  }
  const entries = cardMovementEntries(userId, {
    holdDeltaCents: item.holdDeltaCents,
    unsettledDeltaCents: item.unsettledDeltaCents,
  });
  if (item.reviewCents !== 0n) {
    // Money came back into the Issuing balance (program_card_spend), owed to the user only if a person
    // says so: the user's leg is a liability on the review account, never on user_unsettled.
    entries.push({ account: REVIEW_ACCOUNT, userId, amountCents: -item.reviewCents });
    entries.push({ account: 'program_card_spend', userId: null, amountCents: item.reviewCents });
  }
  if (entries.length === 0) return null;
  const kind: TransferKind = item.record.transactionType ?? (item.holdDeltaCents < 0n ? 'release' : 'hold');
  return {
    ref: `lifecycle:${item.record.eventId}`,
    kind,
    userId,
    authorizationId: item.record.authorizationId,
    entries,
  };
}

const keyOf = (entry: ParsedEntry) => `${entry.item.kind}:${entry.item.record.eventId}`;

/** What one batch does to one authorization, folded in stream order. */
interface AuthorizationFold {
  id: string;
  userId: string;
  cardId: string;
  /** Row values used only if the row does not exist yet. */
  create: {
    decision: 'approved' | 'partial' | 'declined' | 'stripe';
    declineReason: string | null;
    decisionId: string | null;
    decisionSource: 'redis' | 'postgres' | 'stripe';
    latencyUs: number | null;
    merchantCategoryCode: string | null;
    merchantName: string | null;
    expiresAt: Date | null;
    /** Stripe's amount for a row created from a Stripe event (stand-in): becomes requested/approved. */
    stripeAmountCents: bigint;
    stripeApproved: boolean;
  };
  requestedAddCents: bigint;
  approvedAddCents: bigint;
  heldAddCents: bigint;
  capturedAddCents: bigint;
  /** Any decision of this batch approved (decisions can only turn `approved` on). */
  approvedByDecision: boolean;
  /** Stripe's latest word on `approved`, when a lifecycle event of this batch carried the authorization. */
  approvedByStripe: boolean | null;
  /** The status to move to; a terminal status is never left. */
  status: 'pending' | 'closed' | 'reversed' | 'expired' | null;
}

function decisionLabel(item: DecisionItem): 'approved' | 'partial' | 'declined' {
  if (!item.approved) return 'declined';
  return item.reason === 'partial' ? 'partial' : 'approved';
}

function foldAuthorizations(applied: ParsedEntry[], options: ApplyOptions): AuthorizationFold[] {
  const folds = new Map<string, AuthorizationFold>();
  for (const entry of applied) {
    const item = entry.item;
    const authorizationId = item.record.authorizationId;
    const userId = item.record.userId;
    if (authorizationId === null || userId === null) continue;
    let fold = folds.get(authorizationId);
    // An authorization never changes user: two users' records for one in a batch is a wrong card → user
    // view upstream (writeAuthorizations refuses it against the stored row the same way).
    if (fold !== undefined && fold.userId !== userId) {
      throw new NonRetryableError(
        'authorization_user_mismatch',
        `authorization ${authorizationId} has records of two users in one batch: refused, nothing booked`,
      );
    }
    if (item.kind === 'decision') {
      const record = item.record;
      if (fold === undefined) {
        fold = {
          id: authorizationId,
          userId,
          cardId: record.cardId,
          create: {
            decision: decisionLabel(item),
            declineReason: item.approved ? null : item.reason,
            decisionId: record.decisionId,
            decisionSource: record.source,
            latencyUs: record.latencyUs,
            merchantCategoryCode: record.merchantCategoryCode,
            merchantName: record.merchantName,
            expiresAt: new Date(record.holdExpiresAtMs),
            stripeAmountCents: 0n,
            stripeApproved: false,
          },
          requestedAddCents: 0n,
          approvedAddCents: 0n,
          heldAddCents: 0n,
          capturedAddCents: 0n,
          approvedByDecision: false,
          approvedByStripe: null,
          status: null,
        };
        folds.set(authorizationId, fold);
      }
      fold.requestedAddCents += item.requestedCents;
      fold.approvedAddCents += item.approvedCents;
      fold.heldAddCents += item.approvedCents;
      fold.approvedByDecision ||= item.approved;
      continue;
    }
    const record = item.record;
    const auth = record.authorization;
    if (fold === undefined) {
      const mcc = auth?.merchantCategoryCode ?? null;
      fold = {
        id: authorizationId,
        userId,
        cardId: record.cardId ?? 'unknown',
        create: {
          decision: 'stripe',
          declineReason: null,
          decisionId: null,
          decisionSource: 'stripe',
          latencyUs: null,
          merchantCategoryCode: mcc,
          merchantName: auth?.merchantName ?? null,
          expiresAt:
            auth === null ? null : new Date(holdExpiresAtMs(options.holdExpiry, mcc, auth.createdS * 1000)),
          stripeAmountCents: auth !== null ? BigInt(auth.amountCents) : 0n,
          stripeApproved: auth?.approved ?? false,
        },
        requestedAddCents: 0n,
        approvedAddCents: 0n,
        heldAddCents: 0n,
        capturedAddCents: 0n,
        approvedByDecision: false,
        approvedByStripe: null,
        status: null,
      };
      folds.set(authorizationId, fold);
    }
    fold.heldAddCents += item.holdDeltaCents;
    fold.capturedAddCents += item.capturedDeltaCents;
    if (auth !== null) {
      fold.approvedByStripe = auth.approved;
      if (fold.status === null || fold.status === 'pending') fold.status = auth.status;
    } else if (
      record.eventType === 'credana.hold_expired' &&
      (fold.status === null || fold.status === 'pending')
    ) {
      fold.status = 'expired';
    }
  }
  return [...folds.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function auditOf(entry: ParsedEntry): AuditInput {
  const item = entry.item;
  const record = item.record;
  if (item.kind === 'decision') {
    return {
      actor: 'ledger-writer',
      action: 'authorization.hold',
      entityType: 'authorization',
      entityId: record.authorizationId ?? record.eventId,
      data: {
        eventId: record.eventId,
        decisionId: (record as DecisionRecord).decisionId,
        userId: record.userId,
        requestedCents: item.requestedCents,
        grantedCents: item.approvedCents,
        reason: item.reason,
        source: (record as DecisionRecord).source,
        streamId: entry.id,
      },
    };
  }
  const lifecycle = record as LifecycleRecord;
  const action =
    lifecycle.transactionType === 'capture'
      ? 'card.capture'
      : lifecycle.transactionType === 'refund'
        ? 'card.refund'
        : item.holdDeltaCents < 0n
          ? 'hold.release'
          : 'hold.create';
  return {
    actor: 'ledger-writer',
    action,
    entityType: lifecycle.transactionId !== null ? 'transaction' : 'authorization',
    entityId: lifecycle.transactionId ?? lifecycle.authorizationId ?? lifecycle.eventId,
    data: {
      eventId: lifecycle.eventId,
      eventType: lifecycle.eventType,
      userId: lifecycle.userId,
      authorizationId: lifecycle.authorizationId,
      holdDeltaCents: item.holdDeltaCents,
      unsettledDeltaCents: item.unsettledDeltaCents,
      capturedDeltaCents: item.capturedDeltaCents,
      reviewCents: item.reviewCents,
      reviewReason: item.reviewReason,
      streamId: entry.id,
    },
  };
}

const bySortKey =
  <T>(key: (t: T) => string) =>
  (a: T, b: T) => {
    const x = key(a);
    const y = key(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };

/**
 * The archive of an entry (its card_events row) failed while its money, if any, is written. Carries
 * the database error's `code`, so retry decisions treat it like the error itself.
 */
export class ArchiveError extends Error {
  readonly code: unknown;
  constructor(override readonly cause: unknown) {
    const e = cause as { code?: unknown; message?: unknown } | null;
    super(`archive: ${typeof e?.message === 'string' ? e.message : String(cause)}`);
    this.name = 'ArchiveError';
    this.code = e?.code;
  }
}

/** Postgres's data exceptions (22) and integrity violations (23): the record's fault, not the server's. */
function isDataError(error: unknown): boolean {
  return classifyError(error).fault === 'data';
}

/**
 * Applies `entries` (in stream order per shard): the money in one transaction, the archive in another
 * (see the header). Idempotent: applying the same entries again, concurrently or later, changes
 * nothing. Throws the money transaction's error if it failed (nothing of it applied), else an
 * ArchiveError if only the archive failed; the caller decides between retrying and isolating a poison
 * entry.
 */
export async function applyBatch(
  sql: Sql,
  entries: readonly ParsedEntry[],
  options: ApplyOptions = { holdExpiry: HOLD_EXPIRY_DEFAULTS },
): Promise<ApplyResult> {
  // The same record twice in one batch (a replay landing next to its original) counts once.
  const seen = new Set<string>();
  const unique: ParsedEntry[] = [];
  for (const entry of entries) {
    const key = keyOf(entry);
    if (seen.has(key)) continue;
    seen.add(key);
    unique.push(entry);
  }
  if (unique.length === 0) return { applied: 0, duplicates: entries.length };
  // Sealed before either transaction begins: no lock is held while a key is looked up.
  const sealed = await sealNames(unique, options.merchantNames ?? null);

  const transfers = new Map<string, TransferInput>();
  for (const entry of unique) {
    const transfer = transferOf(entry);
    if (transfer !== null) transfers.set(keyOf(entry), transfer);
  }
  // Every decision is keyed in the money transaction (its row), moving money or not.
  const money = unique.filter((entry) => entry.item.kind === 'decision' || transfers.has(keyOf(entry)));
  const other = unique.filter((entry) => entry.item.kind !== 'decision' && !transfers.has(keyOf(entry)));

  let applied = 0;
  let moneyError: unknown = null;
  if (money.length > 0) {
    try {
      applied += await sql.begin((tx) => applyMoney(tx, money, transfers, options, sealed));
    } catch (error) {
      moneyError = error;
    }
  }
  // The archive is written even when the money failed on its data (that entry will be dead-lettered
  // with its event in it anyway, but the others' events are kept); not when Postgres itself failed.
  if (moneyError === null || isDataError(moneyError)) {
    try {
      applied += await sql.begin((tx) => applyArchive(tx, unique, other, options, sealed));
    } catch (error) {
      if (error instanceof FencedError) throw error;
      if (moneyError === null) throw new ArchiveError(error);
    }
  }
  if (moneyError !== null) throw moneyError;
  return { applied, duplicates: entries.length - applied };
}

/** The money transaction: returns how many of `money` were applied (new keys). */
async function applyMoney(
  tx: Tx,
  money: ParsedEntry[],
  transfers: Map<string, TransferInput>,
  options: ApplyOptions,
  sealed: SealedNames,
): Promise<number> {
  // Sorted by ref so concurrent writers take the unique-index locks in one order.
  const sortedTransfers = money
    .flatMap((entry) => {
      const transfer = transfers.get(keyOf(entry));
      return transfer === undefined ? [] : [transfer];
    })
    .sort(bySortKey((t) => t.ref));
  // The natural-key inserts do not depend on each other: sent together, they are pipelined on the
  // transaction's connection (one round trip, still executed in this order).
  const [, newDecisions, newRefLists] = await Promise.all([
    options.fence?.(tx),
    insertDecisions(tx, money),
    Promise.all(
      chunksOf(sortedTransfers, limits.transfersPerStatementMax).map((chunk) => insertTransfers(tx, chunk)),
    ),
  ]);
  const newRefs = new Set(newRefLists.flatMap((refs) => [...refs]));

  const applied = money.filter((entry) => {
    const transfer = transfers.get(keyOf(entry));
    if (transfer !== undefined) return newRefs.has(transfer.ref);
    return newDecisions.has(entry.item.record.eventId);
  });
  // Before this batch's amounts: its lifecycle entries were computed in Redis against the decision
  // that replaces the fallback's here.
  const superseding = await supersedeFallbackDecisions(
    tx,
    money.filter(
      (entry): entry is ParsedEntry & { item: DecisionItem } =>
        entry.item.kind === 'decision' &&
        entry.item.record.source === 'redis' &&
        entry.item.record.userId !== null &&
        !newDecisions.has(entry.item.record.eventId) &&
        !applied.includes(entry),
    ),
  );

  const folds = foldAuthorizations(applied, options);
  await Promise.all([applyCreditAccounts(tx, applied), applyAuthorizations(tx, folds, sealed)]);
  // Last: the audit insert locks the chain head until COMMIT, so holding it as briefly as possible
  // serialises concurrent writers only at their very end.
  await insertAudit(tx, [
    ...applied.filter((entry) => transfers.has(keyOf(entry))).map(auditOf),
    ...superseding,
  ]);
  return applied.length + superseding.length;
}

/**
 * One answer per request (docs/chaos.md, bug 3). A replay of a request Redis had answered can reach a
 * process cut off from Redis before the ledger writer has written Redis's decision to Postgres; its
 * fallback then finds no decision and decides afresh, under its own decision id, and takes the event's
 * decision row and hold ref first. Redis keeps its own stored answer (ADOPT_FALLBACK leaves an answer
 * under another decision id as it is: 'known'), answers every later replay with it, and computes every
 * lifecycle movement of the authorization against its hold. So when Redis's record arrives here for an
 * event the fallback decided under another id, Postgres follows Redis: the hold moves by the difference
 * (ref `hold:<eventId>:redis`, once), and the event's decision row and the authorization take Redis's
 * decision. What the fallback decided stays in its audit row, its `fallback_decisions` row and this
 * writer's audit row (`authorization.decision_superseded`). (A fallback row of another user — the card
 * changed hands in between — is left alone: its hold is not this user's.)
 *
 * A late Redis attempt of the fallback's own request (docs/chaos.md bug 5) has the fallback's decision
 * id: the process gave up on it and answered from the fallback, and the DECIDE still ran in Redis. Until
 * the adoption replaces it by the fallback's answer (ADOPT_FALLBACK 'superseded'), Redis holds the late
 * attempt's grant, and every lifecycle movement of the authorization is computed against it. So
 * Postgres follows that too: the hold moves by the difference (same ref), the decision row and the
 * authorization's decision stay the fallback's (Stripe was told its answer), and an
 * `authorization.late_attempt_followed` audit row says so. The adoption then moves both back by the
 * difference (or, if Stripe's events settled the authorization first, finds both already agreeing).
 * Booked, it never makes Postgres refuse a release Redis computed against the late grant.
 * Returns the audit rows of the decisions replaced or followed (empty in the usual case: re-delivered
 * entries).
 */
async function supersedeFallbackDecisions(
  tx: Tx,
  candidates: (ParsedEntry & { item: DecisionItem })[],
): Promise<AuditInput[]> {
  if (candidates.length === 0) return [];
  const fallbackRows = await tx<
    { id: string; event_id: string; user_id: string | null; approved_cents: string }[]
  >`
    select id, event_id, user_id, approved_cents::text from decisions
    where event_id = any(${candidates.map((entry) => entry.item.record.eventId)}::text[]) and source = 'postgres'`;
  const fallbackByEvent = new Map(fallbackRows.map((row) => [row.event_id, row]));
  const replaced = candidates
    .flatMap((entry) => {
      const fallback = fallbackByEvent.get(entry.item.record.eventId);
      if (fallback === undefined || fallback.user_id !== entry.item.record.userId) return [];
      const late = fallback.id === entry.item.record.decisionId;
      const deltaCents = entry.item.approvedCents - BigInt(fallback.approved_cents);
      // A late attempt that granted what the fallback granted holds nothing Postgres lacks.
      if (late && deltaCents === 0n) return [];
      return [{ item: entry.item, entryId: entry.id, fallback, deltaCents, late }];
    })
    .sort(bySortKey((r) => r.item.record.eventId));
  if (replaced.length === 0) return [];
  // The ref and its entries in one statement (a zero difference takes the ref alone and still replaces
  // the decision): only the writer that inserts the ref applies the rest, so a re-delivery or a
  // concurrent writer changes nothing.
  const refOf = (r: (typeof replaced)[number]) => `hold:${r.item.record.eventId}:redis`;
  const taken = await insertTransfers(
    tx,
    replaced.map((r) => ({
      ref: refOf(r),
      kind: r.deltaCents < 0n ? 'release' : 'hold',
      userId: r.item.record.userId,
      authorizationId: r.item.record.authorizationId,
      entries: cardMovementEntries(r.item.record.userId as string, {
        holdDeltaCents: r.deltaCents,
        unsettledDeltaCents: 0n,
      }),
    })),
  );
  const mine = replaced.filter((r) => taken.has(refOf(r)));
  if (mine.length === 0) return [];
  const replacedAnswers = mine.filter((r) => !r.late);
  await Promise.all([
    addToCreditAccounts(
      tx,
      mine
        .filter((r) => r.deltaCents !== 0n)
        .map((r) => ({ userId: r.item.record.userId as string, holdsCents: r.deltaCents })),
    ),
    // The event's decision row becomes Redis's: a later replay the fallback answers, and the daily spend
    // it counts, then agree with Redis. A late attempt's does not: the fallback's answer is the one
    // Stripe was told, and the adoption makes it Redis's too.
    replaceFallbackDecisions(
      tx,
      replacedAnswers.map((r) => ({
        eventId: r.item.record.eventId,
        fallbackId: r.fallback.id,
        id: r.item.record.decisionId,
        approved: r.item.approved,
        approvedCents: r.item.approvedCents,
        reason: r.item.reason,
        latencyUs: r.item.record.latencyUs,
        decidedAt: new Date(r.item.record.decidedAtMs),
      })),
    ),
    supersedeAuthorizationDecisions(
      tx,
      mine.map((r) => ({
        id: r.item.record.authorizationId,
        fallbackId: r.fallback.id,
        deltaCents: r.deltaCents,
        late: r.late,
        approved: r.item.approved,
        decision: decisionLabel(r.item),
        declineReason: r.item.approved ? null : r.item.reason,
        decisionId: r.item.record.decisionId,
      })),
    ),
  ]);
  return mine.map((r) => ({
    actor: 'ledger-writer',
    action: r.late ? 'authorization.late_attempt_followed' : 'authorization.decision_superseded',
    entityType: 'authorization',
    entityId: r.item.record.authorizationId,
    data: {
      eventId: r.item.record.eventId,
      decisionId: r.item.record.decisionId,
      fallbackDecisionId: r.fallback.id,
      userId: r.item.record.userId,
      requestedCents: r.item.requestedCents,
      grantedCents: r.item.approvedCents,
      fallbackGrantedCents: BigInt(r.fallback.approved_cents),
      holdDeltaCents: r.deltaCents,
      reason: r.item.reason,
      streamId: r.entryId,
    },
  }));
}

/**
 * The archive transaction: every entry's event into card_events, and the effects of the lifecycle
 * records that move no money (`other`), keyed by their card_events row. Returns how many of `other`
 * were applied.
 */
async function applyArchive(
  tx: Tx,
  unique: ParsedEntry[],
  other: ParsedEntry[],
  options: ApplyOptions,
  sealed: SealedNames,
): Promise<number> {
  const [, newEvents] = await Promise.all([options.fence?.(tx), insertCardEvents(tx, unique)]);
  const applied = other.filter((entry) => newEvents.has(entry.item.record.eventId));
  await applyAuthorizations(tx, foldAuthorizations(applied, options), sealed);
  return applied.length;
}

/** Sealed merchant names of a batch, by authorization id and plaintext; null where sealing was not possible. */
type SealedNames = Map<string, Buffer | null>;
const sealedKey = (authorizationId: string, name: string) => `${authorizationId}\u0000${name}`;

/**
 * Seals every (authorization, merchant name) of the entries. A name whose authorization row already
 * exists is sealed for nothing: AES-GCM of a short string costs microseconds, a lookup of the rows
 * would cost a round trip.
 */
async function sealNames(entries: ParsedEntry[], names: MerchantNames | null): Promise<SealedNames> {
  const out: SealedNames = new Map();
  for (const entry of entries) {
    const record = entry.item.record;
    const name =
      record.kind === 'decision' ? record.merchantName : (record.authorization?.merchantName ?? null);
    if (record.authorizationId === null || name === null) continue;
    const key = sealedKey(record.authorizationId, name);
    if (out.has(key)) continue;
    out.set(key, names === null ? null : await names.seal(record.authorizationId, name));
  }
  return out;
}

function chunksOf<T>(rows: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < rows.length; i += size) out.push(rows.slice(i, i + size));
  return out;
}

/* The rows of a batch, chunked into statements of at most limits.rowsPerStatementMax rows
   (shared/db/queries/ has the statements). */

async function insertCardEvents(tx: Tx, entries: ParsedEntry[]): Promise<Set<string>> {
  const rows = entries
    .map((entry) => {
      const record = entry.item.record;
      const objectId =
        record.kind === 'decision'
          ? record.authorizationId
          : (record.transactionId ?? record.authorizationId);
      return {
        id: record.eventId,
        type: record.kind === 'decision' ? 'issuing_authorization.request' : record.eventType,
        userId: record.userId,
        objectId,
        // The event's JSON text (parseEntry checked it parses), cast to jsonb in SQL: an object, not a string.
        payload: record.event,
        createdAt: new Date(record.eventCreatedS * 1000),
      };
    })
    .sort(bySortKey((row) => row.id));
  const inserted = new Set<string>();
  for (const chunk of chunksOf(rows, limits.rowsPerStatementMax)) {
    for (const id of await insertCardEventRows(tx, chunk)) inserted.add(id);
  }
  return inserted;
}

async function insertDecisions(tx: Tx, entries: ParsedEntry[]): Promise<Set<string>> {
  const rows = entries
    .flatMap((entry) => (entry.item.kind === 'decision' ? [entry.item] : []))
    .sort(bySortKey((item) => item.record.eventId))
    .map((item) => ({
      id: item.record.decisionId,
      eventId: item.record.eventId,
      authorizationId: item.record.authorizationId,
      userId: item.record.userId,
      cardId: item.record.cardId,
      approved: item.approved,
      requestedCents: item.requestedCents,
      approvedCents: item.approvedCents,
      reason: item.reason,
      source: item.record.source,
      latencyUs: item.record.latencyUs,
      decidedAt: new Date(item.record.decidedAtMs),
    }));
  const inserted = new Set<string>();
  for (const chunk of chunksOf(rows, limits.rowsPerStatementMax)) {
    for (const eventId of await insertDecisionRows(tx, chunk)) inserted.add(eventId);
  }
  return inserted;
}

async function applyCreditAccounts(tx: Tx, applied: ParsedEntry[]): Promise<void> {
  const deltas = applied.flatMap((entry) => {
    const item = entry.item;
    const userId = item.record.userId;
    if (userId === null) return [];
    const holdsCents = item.kind === 'decision' ? item.approvedCents : item.holdDeltaCents;
    const unsettledCents = item.kind === 'decision' ? 0n : item.unsettledDeltaCents;
    if (holdsCents === 0n && unsettledCents === 0n) return [];
    return [{ userId, holdsCents, unsettledCents }];
  });
  if (deltas.length === 0) return;
  // Sent together (pipelined); the connection runs them in order, so the update sees the rows the
  // insert made.
  await Promise.all([
    ensureCreditAccounts(
      tx,
      deltas.map((d) => d.userId),
    ),
    addToCreditAccounts(tx, deltas),
  ]);
}

/**
 * Creates the authorizations this batch is the first to see, with their final amounts and status, and
 * adds the batch's amounts to the ones that already exist (writeAuthorizations). A row created from a
 * Stripe event (we never decided it: stand-in) takes Stripe's amount as requested and approved.
 */
async function applyAuthorizations(tx: Tx, folds: AuthorizationFold[], sealed: SealedNames): Promise<void> {
  const writes = folds.map((f): AuthorizationWrite => {
    const stripe = f.create.decision === 'stripe';
    return {
      id: f.id,
      userId: f.userId,
      cardId: f.cardId,
      create: {
        status: f.status ?? 'pending',
        approved: f.approvedByStripe ?? f.approvedByDecision,
        decision: f.create.decision,
        declineReason: f.create.declineReason,
        decisionId: f.create.decisionId,
        decisionSource: f.create.decisionSource,
        latencyUs: f.create.latencyUs,
        merchantCategoryCode: f.create.merchantCategoryCode,
        merchantNameSealed:
          f.create.merchantName === null
            ? null
            : (sealed.get(sealedKey(f.id, f.create.merchantName)) ?? null),
        merchantName: f.create.merchantName,
        expiresAt: f.create.expiresAt,
        requestedCents: f.requestedAddCents + (stripe ? f.create.stripeAmountCents : 0n),
        approvedCents:
          f.approvedAddCents + (stripe && f.create.stripeApproved ? f.create.stripeAmountCents : 0n),
        heldCents: f.heldAddCents,
        capturedCents: f.capturedAddCents,
      },
      add: {
        requestedCents: f.requestedAddCents,
        approvedCents: f.approvedAddCents,
        heldCents: f.heldAddCents,
        capturedCents: f.capturedAddCents,
        approvedByDecision: f.approvedByDecision,
        approvedByStripe: f.approvedByStripe,
        status: f.status,
      },
    };
  });
  for (const chunk of chunksOf(writes, limits.rowsPerStatementMax)) await writeAuthorizations(tx, chunk);
}
