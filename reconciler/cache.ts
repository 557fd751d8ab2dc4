/**
 * Job `cache`: recomputes each user's position from Postgres (the system of record) and compares it
 * with the cached account in Redis; repairs drift by rebuilding the cached account from Postgres.
 *
 * Users are walked in id order, `usersPerBatch` at a time, at most `usersPerRunMax` per run; the
 * cursor is the last user id checked. A user whose money is not all in Postgres (outbox entries not
 * yet written, or dead-lettered ones not yet replayed), or whose cache moved while we read, is
 * deferred (counted, not compared): no repair raises credit from a Postgres that may lag. Drift where Redis holds more than Postgres
 * is reported and left alone (see redisHoldsAhead). Above `driftAlertUsersMax` drifted users the run
 * raises an alert. Idempotent: a second run over repaired users finds nothing.
 */
import type { Redis } from '../shared/redis/client.ts';
import { compareUser, rebuildFromPostgres, redisHoldsAhead } from './cache-state.ts';
import { limits } from './limits.ts';
import type { Finding, JobContext, JobOutcome } from './types.ts';
import { NIL_UUID } from './types.ts';

export interface CacheJobOptions {
  redis: Redis;
  prefix: string;
  /** False for a dry run: report only. */
  repair?: boolean;
  usersPerBatch?: number;
  usersPerRunMax?: number;
  driftAlertUsersMax?: number;
  runTimeMaxMs?: number;
}

export function cacheJob(options: CacheJobOptions) {
  const batch = options.usersPerBatch ?? limits.usersPerBatch;
  const perRunMax = options.usersPerRunMax ?? limits.usersPerRunMax;
  const alertAbove = options.driftAlertUsersMax ?? limits.driftAlertUsersMax;
  const timeMaxMs = options.runTimeMaxMs ?? limits.runTimeMaxMs;
  const repair = options.repair ?? true;
  return async (ctx: JobContext): Promise<JobOutcome> => {
    const { sql, now } = ctx;
    const startedMs = now();
    const findings: Finding[] = [];
    let checked = 0;
    let repairs = 0;
    let drifted = 0;
    let deferred = 0;
    let after = ctx.cursor ?? NIL_UUID;
    for (;;) {
      if (checked >= perRunMax || now() - startedMs >= timeMaxMs) {
        return finish(after);
      }
      const take = Math.min(batch, perRunMax - checked);
      const users = await sql<{ id: string }[]>`
        select u.id::text from users u where u.id > ${after}::uuid order by u.id limit ${take}`;
      if (users.length === 0) return finish(null);
      for (const { id: userId } of users) {
        checked++;
        const result = await compareUser(options.redis, sql, options.prefix, userId, now());
        if (result.state === 'deferred') deferred++;
        if (result.state !== 'compared' || result.diffs.length === 0) continue;
        drifted++;
        const fields = result.diffs.map(
          (d) => `${d.field}: redis=${d.redis ?? '∅'} postgres=${d.postgres ?? '∅'}`,
        );
        if (redisHoldsAhead(result.diffs)) {
          findings.push({ kind: 'cache_holds_ahead_of_postgres', userId, fields, repaired: false });
          continue;
        }
        let repaired = false;
        if (repair) {
          const outcome = await rebuildFromPostgres(
            options.redis,
            sql,
            options.prefix,
            userId,
            result.fingerprint,
            now(),
          );
          repaired = outcome === 'rebuilt';
          if (repaired) repairs++;
        }
        findings.push({ kind: 'cache_drift', userId, fields, repaired });
      }
      after = users[users.length - 1]!.id;
      await ctx.checkpoint({ cursor: after, checked });
    }

    function finish(cursor: string | null): JobOutcome {
      if (deferred > 0) findings.push({ kind: 'users_deferred', count: deferred });
      // Deferred users are not a problem in themselves; they alone do not make the run's status.
      const problems = findings.filter((f) => f.kind !== 'users_deferred');
      return {
        checked,
        findings: problems.length === 0 ? [] : findings,
        repairs,
        cursor,
        ...(drifted > alertAbove
          ? { alert: `cache drift in ${drifted} users exceeds the threshold of ${alertAbove}` }
          : {}),
      };
    }
  };
}
