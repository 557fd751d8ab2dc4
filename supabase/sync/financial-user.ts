/**
 * Writes a Supabase user's own controls into the financial database (the system of record for
 * limits and card state) and then into the hot path's Redis cache, in that order, so a cache rebuilt
 * from Postgres later agrees with what the hot path saw. Absolute values: applying the same state twice
 * changes nothing, which is what makes the bridge's at-least-once delivery safe.
 *
 * The user owns only their switches: their freeze (`cards.frozen`, never `ops_frozen`), the daily limit
 * they ask for (an increase waits out DAILY_LIMIT_INCREASE_COOLDOWN_S, a decrease applies at once, and
 * the program's ceiling caps either) and their blocked categories. What reaches Redis is the effective
 * state read back in the same transaction (shared/db/queries/controls.ts), so a user's unfreeze of an
 * ops-frozen card leaves it frozen.
 */
import { planDailyLimit } from '../../shared/controls/program.ts';
import type { Sql } from '../../shared/db/client.ts';
import { userControls } from '../../shared/db/queries/controls.ts';
import { insertAudit } from '../../shared/db/queries/ledger.ts';
import { writeControls } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';

export interface UserControlsState {
  userId: string;
  frozen: boolean;
  /** null: the program's default. */
  dailyLimitCents: bigint | null;
  blockedMccs: string[];
  /** card_controls.version, for the audit trail. */
  version: bigint;
}

export interface FinancialUserDefaults {
  /** CREDIT_LIMIT_CENTS_DEFAULT: a new user's credit limit (the program's, never the user's choice). */
  creditLimitCents: bigint;
  /** DAILY_LIMIT_CENTS_DEFAULT: the daily limit when the user chose none. */
  dailyLimitCents: bigint;
  /** DAILY_LIMIT_CEILING_CENTS_DEFAULT: a new user's ceiling on their daily limit (the program's). */
  dailyLimitCeilingCents: bigint;
  /** DAILY_LIMIT_INCREASE_COOLDOWN_S: how long a requested increase waits. */
  dailyLimitIncreaseCooldownS: number;
}

export interface ApplyResult {
  created: boolean;
  limitsChanged: boolean;
  cardsChanged: number;
  /** True when the user's account was cached and now has the new state. */
  cached: boolean;
}

export async function applyUserState(
  financial: Sql,
  redis: Redis,
  prefix: string,
  state: UserControlsState,
  defaults: FinancialUserDefaults,
  nowMs = Date.now(),
): Promise<ApplyResult> {
  const requestedCents = state.dailyLimitCents ?? defaults.dailyLimitCents;
  const result = await financial.begin(async (tx) => {
    // A new user's first limit applies at once (under the ceiling); the program's columns are set
    // only here, at creation, from the program's defaults.
    const inserted = await tx`
      insert into users (id, credit_limit_cents, daily_limit_cents, daily_limit_ceiling_cents, blocked_mccs)
      values (${state.userId}, ${defaults.creditLimitCents.toString()}, ${requestedCents.toString()},
        ${defaults.dailyLimitCeilingCents.toString()}, ${tx.array(state.blockedMccs)}::text[])
      on conflict (id) do nothing
      returning id`;
    const created = inserted.length > 0;
    // The row lock serialises this with the program's controls writers (shared/controls/program.ts).
    const [user] = await tx<
      {
        daily_limit_cents: string;
        daily_limit_pending_cents: string | null;
        daily_limit_pending_at: Date | null;
        blocked_mccs: string[];
      }[]
    >`select daily_limit_cents::text, daily_limit_pending_cents::text, daily_limit_pending_at, blocked_mccs
      from users where id = ${state.userId} for update`;
    if (user === undefined) throw new Error(`financial user ${state.userId} missing after its upsert`);
    const plan = planDailyLimit(
      {
        inForceCents: BigInt(user.daily_limit_cents),
        pendingCents: user.daily_limit_pending_cents === null ? null : BigInt(user.daily_limit_pending_cents),
        pendingAtMs: user.daily_limit_pending_at?.getTime() ?? null,
      },
      requestedCents,
      nowMs,
      defaults.dailyLimitIncreaseCooldownS,
    );
    const limitsChanged =
      !created &&
      (plan.inForceCents.toString() !== user.daily_limit_cents ||
        (plan.pendingCents?.toString() ?? null) !== user.daily_limit_pending_cents ||
        plan.pendingAtMs !== (user.daily_limit_pending_at?.getTime() ?? null) ||
        state.blockedMccs.join(',') !== user.blocked_mccs.join(','));
    if (limitsChanged) {
      await tx`update users set daily_limit_cents = ${plan.inForceCents.toString()},
          daily_limit_pending_cents = ${plan.pendingCents?.toString() ?? null},
          daily_limit_pending_at = ${plan.pendingAtMs === null ? null : new Date(plan.pendingAtMs)},
          blocked_mccs = ${tx.array(state.blockedMccs)}::text[], updated_at = now()
        where id = ${state.userId}`;
    }
    // The user's own switch only: an ops freeze (cards.ops_frozen) is the program's, untouched here.
    const cards = await tx`
      update cards set frozen = ${state.frozen}, updated_at = now()
      where user_id = ${state.userId} and frozen <> ${state.frozen}`;
    await tx`update users set controls_version = controls_version + 1 where id = ${state.userId}`;
    if (created || limitsChanged || cards.count > 0) {
      await insertAudit(tx, [
        {
          actor: 'supabase-bridge',
          action: created ? 'user.created' : 'user.controls_changed',
          entityType: 'user',
          entityId: state.userId,
          data: {
            frozen: state.frozen,
            dailyLimitRequestedCents: requestedCents.toString(),
            dailyLimitInForceCents: plan.inForceCents.toString(),
            dailyLimitPendingCents: plan.pendingCents?.toString() ?? null,
            dailyLimitPendingAt: plan.pendingAtMs === null ? null : new Date(plan.pendingAtMs).toISOString(),
            blockedMccs: state.blockedMccs,
            controlsVersion: state.version.toString(),
            cardsChanged: cards.count,
          },
        },
      ]);
    }
    const controls = await userControls(tx, state.userId, nowMs);
    if (controls === null) throw new Error(`financial user ${state.userId} missing inside its transaction`);
    return { created, limitsChanged, cardsChanged: cards.count, controls };
  });
  // After the commit: a rebuild from Postgres can no longer bring back the old state.
  const cache = await writeControls(redis, prefix, result.controls);
  return {
    created: result.created,
    limitsChanged: result.limitsChanged,
    cardsChanged: result.cardsChanged,
    cached: cache === 'written',
  };
}
