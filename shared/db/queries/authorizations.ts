/**
 * `authorizations`: one row per card authorization, created by whichever writer sees it first (the
 * hot path's Postgres fallback deciding it, the ledger writer applying a decision or a Stripe event)
 * and then moved only by adding amounts. A new row's merchant name is stored sealed
 * (`merchant_name_sealed`) or, when it could not be sealed (the hot path holds no data key), queued in
 * `merchant_names_unsealed` in the same statement for the ledger writer to seal
 * (ledger-writer/seal-queue.ts). The hot path and the ledger writer may both insert and update every
 * column; the hot path may only insert into the queue.
 */
import { NonRetryableError } from '../../errors.ts';
import type { Sql, Tx } from '../client.ts';
import { unnestRows } from '../unnest.ts';

export type AuthorizationStatus = 'pending' | 'closed' | 'reversed' | 'expired';

export interface AuthorizationWrite {
  id: string;
  /** Null for a card no user holds (the fallback records its decline all the same). */
  userId: string | null;
  cardId: string;
  /** The row's values if this write creates it. */
  create: {
    status: AuthorizationStatus;
    approved: boolean;
    decision: 'approved' | 'partial' | 'declined' | 'stripe';
    declineReason: string | null;
    decisionId: string | null;
    decisionSource: 'redis' | 'postgres' | 'stripe';
    latencyUs: number | null;
    merchantCategoryCode: string | null;
    merchantNameSealed: Buffer | null;
    /** The plaintext name, queued for sealing when the row is new and `merchantNameSealed` is null. */
    merchantName: string | null;
    expiresAt: Date | null;
    requestedCents: bigint;
    approvedCents: bigint;
    heldCents: bigint;
    capturedCents: bigint;
  };
  /** What this write adds to the row if it exists already. */
  add: {
    requestedCents: bigint;
    approvedCents: bigint;
    heldCents: bigint;
    capturedCents: bigint;
    /** A decision of this write approved (decisions can only turn `approved` on). */
    approvedByDecision: boolean;
    /** Stripe's latest word on `approved`, when it spoke. */
    approvedByStripe: boolean | null;
    /** The status to move to, from pending only: a terminal status is never left. */
    status: AuthorizationStatus | null;
  };
}

/**
 * Creates the authorizations that do not exist yet (queuing their unsealed names in the same
 * statement) and adds to the ones that do: one statement when every row is new (the fallback's usual
 * case, a first request), two when some existed. A new row is written once, with its final values (no
 * skeleton that an update rewrites). Rows that exist are left out before the insert, because their
 * proposed amounts could fail the non-negative checks before the conflict is seen; ON CONFLICT covers a
 * row another writer creates meanwhile, which the update (a later statement, a later snapshot) then
 * finds. `offset 0` keeps the existence check a probe of the primary key per row: as a plain
 * anti-join, a cached generic plan made while the table was small hashes the whole table on every
 * batch (seen: a seq scan of authorizations per batch). One row per id; callers fold a batch first and
 * pass it sorted by id. Booleans travel as text (postgres.js serialises a JS boolean array as a scalar).
 *
 * An authorization never changes user: a write whose user differs from the existing row's (both
 * known) is refused in the update itself (`where … user_id`), and the rows it left out are thrown as
 * NonRetryableError('authorization_user_mismatch'), a data error, so the caller's transaction rolls
 * back and no money moves on either account (the ledger writer dead-letters the record). A row of no
 * user (a fallback decline of a card then unknown) is still updated.
 */
export async function writeAuthorizations(tx: Sql | Tx, rows: readonly AuthorizationWrite[]): Promise<void> {
  if (rows.length === 0) return;
  const created = await tx<{ id: string }[]>`
    with v as (
      select * from ${unnestRows(tx, rows, {
        id: ['text', (r) => r.id],
        user_id: ['uuid', (r) => r.userId],
        card_id: ['text', (r) => r.cardId],
        status: ['text', (r) => r.create.status],
        approved: ['text', (r) => String(r.create.approved)],
        decision: ['text', (r) => r.create.decision],
        decline_reason: ['text', (r) => r.create.declineReason],
        decision_id: ['text', (r) => r.create.decisionId],
        decision_source: ['text', (r) => r.create.decisionSource],
        latency_us: ['integer', (r) => (r.create.latencyUs === null ? null : String(r.create.latencyUs))],
        mcc: ['text', (r) => r.create.merchantCategoryCode],
        merchant_name_sealed: ['text', (r) => r.create.merchantNameSealed?.toString('hex') ?? null],
        merchant_name: ['text', (r) => r.create.merchantName],
        expires_at: ['timestamptz', (r) => r.create.expiresAt?.toISOString() ?? null],
        requested: ['bigint', (r) => r.create.requestedCents.toString()],
        approved_cents: ['bigint', (r) => r.create.approvedCents.toString()],
        held: ['bigint', (r) => r.create.heldCents.toString()],
        captured: ['bigint', (r) => r.create.capturedCents.toString()],
      })}
    ), a as (
      insert into authorizations (id, user_id, card_id, status, approved, decision, decline_reason, decision_id,
        decision_source, decision_latency_us, merchant_category_code, merchant_name_sealed, expires_at,
        requested_cents, approved_cents, held_cents, captured_cents)
      select v.id, v.user_id, v.card_id, v.status, v.approved::boolean, v.decision, v.decline_reason, v.decision_id,
        v.decision_source, v.latency_us, v.mcc, decode(v.merchant_name_sealed, 'hex'), v.expires_at,
        v.requested, v.approved_cents, v.held, v.captured
      from v
      where not exists (select 1 from authorizations e where e.id = v.id offset 0)
      order by v.n
      on conflict (id) do nothing
      returning id, merchant_name_sealed is null as unsealed
    ), q as (
      insert into merchant_names_unsealed (authorization_id, merchant_name)
      select a.id, v.merchant_name from a join v on v.id = a.id
      where a.unsealed and v.merchant_name is not null
      order by v.n
      on conflict do nothing
    )
    select id from a`;
  const createdIds = new Set(created.map((row) => row.id));
  const existing = rows.filter((r) => !createdIds.has(r.id));
  if (existing.length === 0) return;
  const updated = await tx<{ id: string }[]>`update authorizations a set
      requested_cents = a.requested_cents + v.requested,
      approved_cents = a.approved_cents + v.approved_cents,
      held_cents = a.held_cents + v.held,
      captured_cents = a.captured_cents + v.captured,
      approved = coalesce(v.by_stripe::boolean, a.approved or v.by_decision::boolean),
      status = case when a.status <> 'pending' or v.status is null then a.status else v.status end,
      updated_at = now()
    from ${unnestRows(tx, existing, {
      id: ['text', (r) => r.id],
      user_id: ['uuid', (r) => r.userId],
      requested: ['bigint', (r) => r.add.requestedCents.toString()],
      approved_cents: ['bigint', (r) => r.add.approvedCents.toString()],
      held: ['bigint', (r) => r.add.heldCents.toString()],
      captured: ['bigint', (r) => r.add.capturedCents.toString()],
      by_decision: ['text', (r) => String(r.add.approvedByDecision)],
      by_stripe: ['text', (r) => (r.add.approvedByStripe === null ? null : String(r.add.approvedByStripe))],
      status: ['text', (r) => r.add.status],
    })}
    where a.id = v.id and coalesce(a.user_id = v.user_id, true)
    returning a.id`;
  if (updated.length === existing.length) return;
  const found = new Set(updated.map((row) => row.id));
  const refused = existing.filter((r) => !found.has(r.id)).map((r) => r.id);
  throw new NonRetryableError(
    'authorization_user_mismatch',
    `authorization ${refused.join(', ')} belongs to another user than the record's: refused, nothing booked`,
  );
}

/** Redis's decision replacing the fallback's `fallbackId` on an authorization, and the hold's move. */
export interface AuthorizationSupersede {
  id: string;
  fallbackId: string;
  /** Redis's grant minus the fallback's, added to held cents (and to approved cents unless `late`). */
  deltaCents: bigint;
  /**
   * A late Redis attempt of the fallback's own request (same decision id; docs/chaos.md bug 5): the hold
   * follows it, the decision stays the fallback's (Stripe was told its answer).
   */
  late: boolean;
  approved: boolean;
  decision: 'approved' | 'partial' | 'declined';
  declineReason: string | null;
  decisionId: string;
}

/**
 * The authorization takes Redis's decision where the fallback's was its decision (the first request of
 * it); an increment only moves the amounts (docs/chaos.md, bug 3); a late attempt moves the hold only
 * (bug 5; ledger-writer/write-batch.ts).
 */
export async function supersedeAuthorizationDecisions(
  tx: Sql | Tx,
  rows: readonly AuthorizationSupersede[],
): Promise<void> {
  if (rows.length === 0) return;
  await tx`update authorizations a set
      approved_cents = a.approved_cents + case when v.late::boolean then 0 else v.delta end,
      held_cents = a.held_cents + v.delta,
      approved = case when v.late::boolean then a.approved
        when a.decision_id = v.fallback_id then v.approved::boolean
        else a.approved or v.approved::boolean end,
      decision = case when a.decision_id = v.fallback_id and not v.late::boolean then v.decision else a.decision end,
      decline_reason = case when a.decision_id = v.fallback_id and not v.late::boolean then v.decline_reason
        else a.decline_reason end,
      decision_source = case when a.decision_id = v.fallback_id and not v.late::boolean then 'redis'
        else a.decision_source end,
      decision_id = case when a.decision_id = v.fallback_id then v.decision_id else a.decision_id end,
      updated_at = now()
    from ${unnestRows(tx, rows, {
      id: ['text', (r) => r.id],
      late: ['text', (r) => String(r.late)],
      delta: ['bigint', (r) => r.deltaCents.toString()],
      fallback_id: ['text', (r) => r.fallbackId],
      approved: ['text', (r) => String(r.approved)],
      decision: ['text', (r) => r.decision],
      decline_reason: ['text', (r) => r.declineReason],
      decision_id: ['text', (r) => r.decisionId],
    })}
    where a.id = v.id`;
}

/**
 * Stores sealed merchant names and takes their plaintext out of `merchant_names_unsealed`, in one
 * statement: a queued row is removed only if it still holds the plaintext that was sealed, and a name is
 * stored only where none is (a row sealed meanwhile keeps its value), so a crash or a second writer
 * doing the same rows changes nothing. The authorization's `updated_at` moves, so the Supabase
 * projection shows the name. Returns how many names were stored. The ledger writer's alone (it holds
 * the data keys; ledger-writer/seal-queue.ts).
 */
export async function storeSealedNames(
  tx: Sql | Tx,
  rows: readonly { id: string; name: string; sealed: Buffer }[],
): Promise<number> {
  if (rows.length === 0) return 0;
  const stored = await tx`with q as (
      delete from merchant_names_unsealed u
      using ${unnestRows(tx, rows, {
        id: ['text', (r) => r.id],
        name: ['text', (r) => r.name],
        sealed: ['text', (r) => r.sealed.toString('hex')],
      })}
      where u.authorization_id = v.id and u.merchant_name = v.name
      returning v.id, v.sealed
    )
    update authorizations a set merchant_name_sealed = decode(q.sealed, 'hex'), updated_at = now()
    from q where a.id = q.id and a.merchant_name_sealed is null`;
  return stored.count;
}

/**
 * What the lifecycle script keeps per authorization (its `authState` hash, shared/lifecycle/lua.ts),
 * as far as Postgres's durable records tell it: read by the account rebuild (shared/redis/account.ts)
 * so an authorization whose cache state was lost (Redis restarted empty) gets it back with its hold.
 */
export interface AuthorizationStateRow {
  id: string;
  status: AuthorizationStatus;
  /** Stripe's latest word (or a decision's) on whether it is approved. */
  approved: boolean;
  heldCents: bigint;
  /** `cap`: cents captured through booked transactions (the writer adds each record's captured cents). */
  capturedCents: bigint;
  /**
   * `ref`, from above: cents of refunds (and capture reversals) credited against the captures, plus
   * what later captures credited of held refunds (`captured_later`). A refund reversal lowers `ref` by
   * what it takes back of it, which no booked record carries; it is not subtracted here, so with one
   * this is above the script's value — a later refund is then credited less, never more.
   */
  refundedCents: bigint;
  /** `rvh`: cents of its refunds held for review, net of what later captures credited (exact). */
  reviewHeldCents: bigint;
  /** Requests we decided for it (`decisions` rows): `ver` is at least this × 1e10. */
  requestsDecided: number;
  /**
   * A closed authorization's first stored `closed` event's `transactions` (the captures Stripe listed
   * then, which the script's `w` was computed from); undefined when the authorization is not closed or
   * no such event is stored, null when the event listed none.
   */
  closedTransactions: unknown[] | null | undefined;
}

/**
 * The cache state of a user's authorizations updated since `since` (the cache keeps an authorization's
 * state that long after its last event: `policyLimits.authorizationStateTtlS`). One statement, so the
 * captured cents and the ledger's lifecycle movements are one snapshot (the ledger writer books both in
 * one transaction), and a closed authorization's first stored `closed` event (card_events, by
 * `object_id`). The refunds come from the ledger's lifecycle transfers of the authorization
 * (`lifecycle:<event id>`, kinds `capture` and `refund`): per transfer, `u` is the user's unsettled leg
 * and `r` the review leg (cents held, negative when a capture credited held refunds back). A credit
 * (refund, capture reversal) has `r ≥ 0` and credits `−u`; a capture that credited held refunds has
 * `r < 0` and credits `−r` (its `u` is the capture less that, so it is not read); any other (a capture,
 * a refund reversal) credits nothing.
 */
// Runs without JIT (the services' roles, drizzle/0022): the planner's estimate of its per-row subqueries
// put it above jit_above_cost, and compiling took 810 ms of a rebuild that runs in 5.9 ms.
export async function authorizationStates(
  sql: Sql | Tx,
  userId: string,
  since: Date,
): Promise<AuthorizationStateRow[]> {
  const rows = await sql<
    {
      id: string;
      status: AuthorizationStatus;
      approved: boolean;
      held_cents: string;
      captured_cents: string;
      requests: string;
      refunded: string;
      review_held: string;
      closed_event: { transactions: unknown[] | null } | null;
    }[]
  >`
    with a as (
      select id, status, approved, held_cents, captured_cents from authorizations
      where user_id = ${userId} and updated_at >= ${since}
    ), m as (
      select t.authorization_id,
        coalesce(sum(e.amount_cents) filter (where e.account = 'user_unsettled'), 0) as u,
        coalesce(sum(-e.amount_cents) filter (where e.account = 'user_refunds_held'), 0) as r
      from ledger_transfers t join ledger_entries e on e.transfer_id = t.id
      where t.user_id = ${userId} and t.kind in ('capture', 'refund') and t.ref like 'lifecycle:%'
        and t.authorization_id in (select id from a)
      group by t.id, t.authorization_id
    )
    select a.id, a.status, a.approved, a.held_cents::text, a.captured_cents::text,
      (select count(*) from decisions d where d.authorization_id = a.id)::text as requests,
      coalesce((select sum(case when m.r < 0 then -m.r when m.u < 0 then -m.u else 0 end)
        from m where m.authorization_id = a.id), 0)::text as refunded,
      coalesce((select sum(m.r) from m where m.authorization_id = a.id), 0)::text as review_held,
      case when a.status = 'closed' then (
        select jsonb_build_object('transactions', c.payload #> '{data,object,transactions}') from card_events c
        where c.object_id = a.id and c.type in ('issuing_authorization.created', 'issuing_authorization.updated')
          and c.payload #>> '{data,object,status}' = 'closed'
        order by c.created_at, c.id limit 1
      ) end as closed_event
    from a`;
  return rows.map((row) => ({
    id: row.id,
    status: row.status,
    approved: row.approved,
    heldCents: BigInt(row.held_cents),
    capturedCents: BigInt(row.captured_cents),
    refundedCents: BigInt(row.refunded),
    reviewHeldCents: BigInt(row.review_held),
    requestsDecided: Number(row.requests),
    closedTransactions:
      row.closed_event === null
        ? undefined
        : Array.isArray(row.closed_event.transactions)
          ? row.closed_event.transactions
          : null,
  }));
}
