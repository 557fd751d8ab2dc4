/**
 * Job `hold-sweep`: the expired-hold sweep over Redis. Every user's cached holds past their expiry
 * (plus `sweepGraceS`) are released through the lifecycle script (`sweepExpiredHolds` →
 * `expireHold`, synthetic event `expire:<authorizationId>`), so each release is an outbox record the
 * ledger writer books. This reaches the holds Postgres does not know yet (their outbox entry not
 * written, or dead-lettered), which the `holds` job — it walks Postgres's open holds — cannot see.
 *
 * Users are walked in id order from Postgres, a batch at a time: one ZCOUNT of each user's
 * expiry set (sent together), then the sweep for the users with something due. The cursor is the last
 * user id; a run stops at `sweepUsersPerRunMax` users or `sweepRunTimeMaxMs` and the next resumes.
 * Idempotent: `expire:<id>` applies once per authorization.
 *
 * A release is routine, not a difference: it counts in `repairs` (and the ledger books it as
 * `lifecycle:expire:<id>`), never as a finding, so a normal night does not raise the findings alert.
 */
import { type Lifecycle, sweepExpiredHolds } from '../../shared/lifecycle/handler.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { type Finding, type JobContext, type JobOutcome, NIL_UUID } from '../types.ts';
import { upkeepLimits } from './limits.ts';

export interface HoldSweepJobOptions {
  redis: Redis;
  prefix: string;
  lifecycle: Lifecycle;
  usersPerBatch?: number;
  usersPerRunMax?: number;
  graceS?: number;
  runTimeMaxMs?: number;
}

export function holdSweepJob(options: HoldSweepJobOptions) {
  const batch = options.usersPerBatch ?? upkeepLimits.sweepUsersPerBatch;
  const perRunMax = options.usersPerRunMax ?? upkeepLimits.sweepUsersPerRunMax;
  const graceMs = (options.graceS ?? upkeepLimits.sweepGraceS) * 1000;
  const timeMaxMs = options.runTimeMaxMs ?? upkeepLimits.sweepRunTimeMaxMs;
  const { redis, prefix, lifecycle } = options;
  return async (ctx: JobContext): Promise<JobOutcome> => {
    const startedMs = ctx.now();
    const findings: Finding[] = [];
    let checked = 0;
    let repairs = 0;
    let after = ctx.cursor ?? NIL_UUID;
    for (;;) {
      if (checked >= perRunMax || ctx.now() - startedMs >= timeMaxMs)
        return { checked, findings, repairs, cursor: after };
      const users = await ctx.sql<{ id: string }[]>`
        select id::text from users where id > ${after}::uuid order by users.id
        limit ${Math.min(batch, perRunMax - checked)}`;
      if (users.length === 0) return { checked, findings, repairs, cursor: null };
      // Judged at one instant per batch, `sweepGraceS` in the past.
      const cutoffMs = ctx.now() - graceMs;
      const due = await Promise.all(
        users.map(({ id }) => redis.zcount(userKeys(prefix, id).holdExpiries, '-inf', cutoffMs)),
      );
      for (const [i, { id }] of users.entries()) {
        if ((due[i] ?? 0) === 0) continue;
        repairs += await sweepExpiredHolds(lifecycle, redis, prefix, id, cutoffMs);
      }
      checked += users.length;
      after = users[users.length - 1]!.id;
      await ctx.checkpoint({ cursor: after, checked });
    }
  };
}
