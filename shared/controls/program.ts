/**
 * The program's controls (ARCHITECTURE.md invariant 9, "the program outranks the user"): ops freeze
 * per card, account suspension, credit limit and the ceiling on the user's daily limit, plus the
 * cool-down that holds back a user's daily limit increase. The operator CLI (`npm run ops`,
 * scripts/ops/controls.ts) is one caller; a support console can be another.
 *
 * Every change follows one path (docs/controls.md): one Postgres transaction locks the user's row,
 * changes the columns, bumps `users.controls_version`, appends the audit row (actor and reason) and
 * reads back the effective controls (shared/db/queries/controls.ts); after the commit the same values
 * are written through to Redis (shared/redis/account.ts writeControls), where every hot-path process
 * reads them on its next decision. The Supabase bridge never writes the program's columns (its
 * database role cannot), so nothing a user sets can undo them.
 */
import type { Sql, Tx } from '../db/client.ts';
import { type UserControls, userControls } from '../db/queries/controls.ts';
import { type AuditInput, insertAudit } from '../db/queries/ledger.ts';
import { DOUBLE_EXACT_MAX } from '../money.ts';
import { writeControls } from '../redis/account.ts';
import type { Redis } from '../redis/client.ts';

export interface ControlsDeps {
  sql: Sql;
  redis: Redis;
  /** REDIS_KEY_PREFIX. */
  prefix: string;
  now?: () => number;
}

/** Who changes a control and why; both go to the audit log. */
export interface ChangedBy {
  actor: string;
  reason: string;
}

export type ControlsFailureCode = 'unknown_card' | 'unknown_user' | 'account_closed' | 'invalid_input';

export interface ControlsFailure {
  ok: false;
  code: ControlsFailureCode;
  message: string;
}

export interface ControlsChange {
  ok: true;
  /** False when the control already had the asked value (the write-through still ran). */
  changed: boolean;
  /** What the write-through did: 'not_cached' means the account is built from Postgres on first use. */
  cache: 'written' | 'not_cached' | 'stale';
  controls: UserControls;
}

export type ControlsOutcome = ControlsChange | ControlsFailure;

/** Credit limits and ceilings stay where Redis's Lua numbers are exact (see money.ts). */
export const CONTROL_CENTS_MAX = DOUBLE_EXACT_MAX;

const fail = (code: ControlsFailureCode, message: string): ControlsFailure => ({ ok: false, code, message });

function checkChangedBy(by: ChangedBy): ControlsFailure | null {
  if (by.actor.trim() === '') return fail('invalid_input', 'an actor is required');
  if (by.reason.trim() === '') return fail('invalid_input', 'a reason is required');
  if (by.reason.length > 500) return fail('invalid_input', 'the reason is longer than 500 characters');
  return null;
}

function checkCents(name: string, cents: bigint): ControlsFailure | null {
  if (cents < 0n || cents > CONTROL_CENTS_MAX)
    return fail('invalid_input', `${name} must be between 0 and ${CONTROL_CENTS_MAX} cents`);
  return null;
}

type Work = (
  tx: Tx,
  nowMs: number,
) => Promise<{ userId: string; changed: boolean; audit: Omit<AuditInput, 'actor'> | null } | ControlsFailure>;

/**
 * Runs one change: the work under the user's row lock, the version bump, the audit row and the read
 * of the effective controls in one transaction; then the write-through to Redis.
 */
async function commitAndWrite(deps: ControlsDeps, actor: string, work: Work): Promise<ControlsOutcome> {
  const nowMs = (deps.now ?? Date.now)();
  const result = await deps.sql.begin(async (tx) => {
    const done = await work(tx, nowMs);
    if ('ok' in done) return done;
    await tx`update users set controls_version = controls_version + 1 where id = ${done.userId}`;
    if (done.audit !== null) await insertAudit(tx, [{ actor, ...done.audit }]);
    const controls = await userControls(tx, done.userId, nowMs);
    if (controls === null) throw new Error(`user ${done.userId} vanished inside its own transaction`);
    return { changed: done.changed, controls };
  });
  if ('ok' in result) return result;
  const cache = await writeControls(deps.redis, deps.prefix, result.controls);
  return { ok: true, changed: result.changed, cache, controls: result.controls };
}

/** Locks the user's row (every controls writer does, first, so writers of one user are serialised). */
async function lockUser(tx: Tx, userId: string): Promise<{ status: string } | undefined> {
  const [row] = await tx<{ status: string }[]>`select status from users where id = ${userId} for update`;
  return row;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Sets or clears the program's freeze of one card. The user's own freeze is a separate switch; the
 * card declines `card_frozen` while either is on.
 */
export async function setOpsFreeze(
  deps: ControlsDeps,
  cardId: string,
  frozen: boolean,
  by: ChangedBy,
): Promise<ControlsOutcome> {
  const bad = checkChangedBy(by);
  if (bad !== null) return bad;
  return commitAndWrite(deps, by.actor, async (tx) => {
    const [card] = await tx<{ user_id: string }[]>`select user_id from cards where id = ${cardId}`;
    if (card === undefined) return fail('unknown_card', `no card ${cardId}`);
    await lockUser(tx, card.user_id);
    const [before] = await tx<{ ops_frozen: boolean; ops_frozen_reason: string | null }[]>`
      select ops_frozen, ops_frozen_reason from cards where id = ${cardId}`;
    if (frozen) {
      await tx`update cards set ops_frozen = true, ops_frozen_reason = ${by.reason}, ops_frozen_by = ${by.actor},
        ops_frozen_at = now(), updated_at = now() where id = ${cardId}`;
    } else {
      await tx`update cards set ops_frozen = false, ops_frozen_reason = null, ops_frozen_by = null,
        ops_frozen_at = null, updated_at = now() where id = ${cardId}`;
    }
    const changed = before?.ops_frozen !== frozen;
    return {
      userId: card.user_id,
      changed,
      audit: {
        action: frozen ? 'card.ops_frozen' : 'card.ops_unfrozen',
        entityType: 'card',
        entityId: cardId,
        data: {
          reason: by.reason,
          userId: card.user_id,
          changed,
          previousReason: before?.ops_frozen_reason ?? null,
        },
      },
    };
  });
}

async function changeUser(
  deps: ControlsDeps,
  userId: string,
  by: ChangedBy,
  action: string,
  apply: (
    tx: Tx,
    status: string,
  ) => Promise<{ before: string; after: string; field: string } | ControlsFailure>,
): Promise<ControlsOutcome> {
  const bad = checkChangedBy(by);
  if (bad !== null) return bad;
  if (!UUID.test(userId)) return fail('invalid_input', `${userId} is not a user id (a UUID)`);
  return commitAndWrite(deps, by.actor, async (tx) => {
    const user = await lockUser(tx, userId);
    if (user === undefined) return fail('unknown_user', `no user ${userId}`);
    const done = await apply(tx, user.status);
    if ('ok' in done) return done;
    await tx`update users set updated_at = now() where id = ${userId}`;
    const changed = done.before !== done.after;
    return {
      userId,
      changed,
      audit: {
        action,
        entityType: 'user',
        entityId: userId,
        data: { reason: by.reason, field: done.field, before: done.before, after: done.after, changed },
      },
    };
  });
}

/** Suspends (`active` → `suspended`) or reinstates (`suspended` → `active`) an account. A closed account stays closed. */
export function setAccountSuspended(
  deps: ControlsDeps,
  userId: string,
  suspended: boolean,
  by: ChangedBy,
): Promise<ControlsOutcome> {
  const after = suspended ? 'suspended' : 'active';
  return changeUser(
    deps,
    userId,
    by,
    suspended ? 'user.suspended' : 'user.reinstated',
    async (tx, status) => {
      if (status === 'closed') return fail('account_closed', `account ${userId} is closed`);
      await tx`update users set status = ${after} where id = ${userId}`;
      return { field: 'status', before: status, after };
    },
  );
}

/** Sets the program's credit limit of a user (the cap on their borrow power). */
export function setCreditLimit(
  deps: ControlsDeps,
  userId: string,
  creditLimitCents: bigint,
  by: ChangedBy,
): Promise<ControlsOutcome> {
  const bad = checkCents('the credit limit', creditLimitCents);
  if (bad !== null) return Promise.resolve(bad);
  return changeUser(deps, userId, by, 'user.credit_limit_set', async (tx) => {
    const [row] = await tx<{ before: string }[]>`
      select credit_limit_cents::text as before from users where id = ${userId}`;
    await tx`update users set credit_limit_cents = ${creditLimitCents.toString()} where id = ${userId}`;
    return { field: 'credit_limit_cents', before: row?.before ?? '', after: creditLimitCents.toString() };
  });
}

/** Sets the program's ceiling on a user's daily limit: whatever the user asks for, never more. */
export function setDailyLimitCeiling(
  deps: ControlsDeps,
  userId: string,
  ceilingCents: bigint,
  by: ChangedBy,
): Promise<ControlsOutcome> {
  const bad = checkCents('the daily limit ceiling', ceilingCents);
  if (bad !== null) return Promise.resolve(bad);
  return changeUser(deps, userId, by, 'user.daily_limit_ceiling_set', async (tx) => {
    const [row] = await tx<{ before: string | null }[]>`
      select daily_limit_ceiling_cents::text as before from users where id = ${userId}`;
    await tx`update users set daily_limit_ceiling_cents = ${ceilingCents.toString()} where id = ${userId}`;
    return {
      field: 'daily_limit_ceiling_cents',
      before: row?.before ?? 'none',
      after: ceilingCents.toString(),
    };
  });
}

export interface DailyLimitPlan {
  inForceCents: bigint;
  pendingCents: bigint | null;
  pendingAtMs: number | null;
}

/**
 * What a user's daily limit request does (invariant 9: tighten at once, loosen after a cool-down):
 * a request at or below the limit in force applies at once and cancels any waiting increase; an
 * increase waits `cooldownS`. Asking again for the same or a smaller increase keeps the timer it
 * already had (repeats must not restart it, and a smaller increase is no looser than the waiting one).
 * An increase whose time has come is taken as in force first. The ceiling is not applied here: it
 * caps the effective limit (shared/db/queries/controls.ts), so a lifted ceiling lets the request through.
 */
export function planDailyLimit(
  current: DailyLimitPlan,
  requestedCents: bigint,
  nowMs: number,
  cooldownS: number,
): DailyLimitPlan {
  let inForce = current.inForceCents;
  let pending = current.pendingCents;
  let pendingAtMs = current.pendingAtMs;
  if (pending !== null && pendingAtMs !== null && pendingAtMs <= nowMs) {
    inForce = pending;
    pending = null;
    pendingAtMs = null;
  }
  if (requestedCents <= inForce || cooldownS === 0) {
    return { inForceCents: requestedCents, pendingCents: null, pendingAtMs: null };
  }
  if (pending !== null && pendingAtMs !== null && requestedCents <= pending) {
    return { inForceCents: inForce, pendingCents: requestedCents, pendingAtMs };
  }
  return { inForceCents: inForce, pendingCents: requestedCents, pendingAtMs: nowMs + cooldownS * 1000 };
}

/** Rows the sweep moves per call: bounds one run; the next run takes the rest. */
export const DUE_INCREASES_BATCH_MAX = 500;

/**
 * Applies every daily limit increase whose cool-down has ended: in Postgres (the increase becomes the
 * limit in force) and in Redis. Run by the Supabase bridge on every drain (supabase/sync/user-bridge.ts),
 * at least every `bridgePollIntervalMs`. A rebuilt account already has the increase (the builder reads
 * the effective limit), so a late sweep never makes the cache disagree with Postgres for long.
 * Returns how many users it changed.
 */
export async function applyDueDailyLimitIncreases(
  deps: ControlsDeps,
  actor = 'controls-sweep',
): Promise<number> {
  const nowMs = (deps.now ?? Date.now)();
  const due = await deps.sql<{ id: string }[]>`
    select id from users where daily_limit_pending_at <= ${new Date(nowMs)}
    order by daily_limit_pending_at limit ${DUE_INCREASES_BATCH_MAX}`;
  let applied = 0;
  for (const { id } of due) {
    const outcome = await commitAndWrite(deps, actor, async (tx) => {
      await lockUser(tx, id);
      const [row] = await tx<{ before: string; after: string }[]>`
        update users set daily_limit_cents = daily_limit_pending_cents, daily_limit_pending_cents = null,
          daily_limit_pending_at = null, updated_at = now()
        from (select daily_limit_cents from users where id = ${id}) as old
        where users.id = ${id} and users.daily_limit_pending_at <= ${new Date(nowMs)}
        returning old.daily_limit_cents::text as before, users.daily_limit_cents::text as after`;
      if (row === undefined) return fail('invalid_input', 'no longer due');
      return {
        userId: id,
        changed: true,
        audit: {
          action: 'user.daily_limit_increase_applied',
          entityType: 'user',
          entityId: id,
          data: { field: 'daily_limit_cents', before: row.before, after: row.after },
        },
      };
    });
    if (outcome.ok) applied++;
  }
  return applied;
}
