/**
 * Writes a Supabase user's state into the financial database (the system of record for limits and
 * card state) and then into the hot path's Redis cache, in that order, so a cache rebuilt from
 * Postgres later agrees with what the hot path saw. Absolute values: applying the same state twice
 * changes nothing, which is what makes the bridge's at-least-once delivery safe.
 */
import type { Sql } from '../../shared/db/client.ts';
import { applyCardControls } from '../../shared/redis/account.ts';
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
}

export interface ApplyResult {
  created: boolean;
  limitsChanged: boolean;
  cardsChanged: number;
  cached: boolean;
}

export async function applyUserState(
  financial: Sql,
  redis: Redis,
  prefix: string,
  state: UserControlsState,
  defaults: FinancialUserDefaults,
): Promise<ApplyResult> {
  const dailyLimitCents = state.dailyLimitCents ?? defaults.dailyLimitCents;
  const result = await financial.begin(async (tx) => {
    const upserted = await tx<{ created: boolean }[]>`
      insert into users (id, credit_limit_cents, daily_limit_cents, blocked_mccs)
      values (${state.userId}, ${defaults.creditLimitCents.toString()}, ${dailyLimitCents.toString()},
        ${tx.array(state.blockedMccs)}::text[])
      on conflict (id) do update
        set daily_limit_cents = excluded.daily_limit_cents, blocked_mccs = excluded.blocked_mccs, updated_at = now()
        where (users.daily_limit_cents, users.blocked_mccs)
          is distinct from (excluded.daily_limit_cents, excluded.blocked_mccs)
      returning (xmax = 0) as created`;
    const cards = await tx`
      update cards set frozen = ${state.frozen}, updated_at = now()
      where user_id = ${state.userId} and frozen <> ${state.frozen}`;
    const created = upserted[0]?.created === true;
    const limitsChanged = upserted.length > 0 && !created;
    if (created || limitsChanged || cards.count > 0) {
      await tx`insert into audit_log (actor, action, entity_type, entity_id, data)
        values ('supabase-bridge', ${created ? 'user.created' : 'user.controls_changed'}, 'user', ${state.userId},
          ${tx.json({
            frozen: state.frozen,
            dailyLimitCents: dailyLimitCents.toString(),
            blockedMccs: state.blockedMccs,
            controlsVersion: state.version.toString(),
            cardsChanged: cards.count,
          })})`;
    }
    return { created, limitsChanged, cardsChanged: cards.count };
  });
  // After the commit: a rebuild from Postgres can no longer bring back the old state.
  const cached = await applyCardControls(redis, prefix, state.userId, {
    frozen: state.frozen,
    dailyLimitCents,
    blockedMccs: state.blockedMccs,
  });
  return { ...result, cached };
}
