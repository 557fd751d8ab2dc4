/**
 * Replaying a dead letter (`npm run ops -- dead-letters replay`): applies exactly the fields the hot path
 * wrote, through the writer's batch write, and records who did it (shared/outbox/dead-letters.ts).
 */
import type { Sql } from '../shared/db/client.ts';
import { insertAudit } from '../shared/db/queries/ledger.ts';
import {
  type DeadLetter,
  deadLetterMember,
  errorText,
  readDeadLetter,
} from '../shared/outbox/dead-letters.ts';
import type { Redis } from '../shared/redis/client.ts';
import { deadLetterKey, userDeadLettersKey } from '../shared/redis/keys.ts';
import { type ApplyOptions, ArchiveError, applyBatch, parseEntry } from './write-batch.ts';

export type ReplayResult =
  | { state: 'replayed'; applied: number; letter: DeadLetter }
  | { state: 'already_replayed'; at: Date; actor: string }
  | { state: 'not_found' }
  | { state: 'unreplayable'; error: string }
  | { state: 'failed'; error: string; moneyWritten: boolean };

export const REPLAY_ACTION = 'ledger.dead_letter_replay';

export interface ReplayOptions {
  redis: Redis;
  sql: Sql;
  prefix: string;
  id: string;
  actor: string;
  reason: string;
  apply?: ApplyOptions;
}

/**
 * Applies a dead letter to Postgres once, records who replayed it and why, and removes it. Safe to
 * repeat and to interrupt: the apply is idempotent, and the entry is removed only after its audit row.
 */
export async function replayDeadLetter(options: ReplayOptions): Promise<ReplayResult> {
  const { redis, sql, prefix, id } = options;
  const letter = await readDeadLetter(redis, prefix, id);
  if (letter === null) {
    const [done] = await sql<{ actor: string; at: Date }[]>`
      select actor, at from audit_log
      where action = ${REPLAY_ACTION} and entity_type = 'dead_letter' and entity_id = ${id}
      order by id limit 1`;
    return done === undefined
      ? { state: 'not_found' }
      : { state: 'already_replayed', at: done.at, actor: done.actor };
  }
  const parsed = parseEntry({ stream: letter.source.stream, id: letter.source.id, fields: letter.fields });
  if (!parsed.ok) return { state: 'unreplayable', error: parsed.error };
  let applied = 0;
  try {
    applied = (await applyBatch(sql, [parsed.entry], options.apply)).applied;
  } catch (error) {
    const moneyWritten = error instanceof ArchiveError;
    // The money is in Postgres now: the user's cache may be rebuilt again. The entry stays listed.
    if (moneyWritten && letter.userId !== null)
      await redis.srem(
        userDeadLettersKey(prefix, letter.userId),
        deadLetterMember(letter.source.stream, letter.source.id),
      );
    return { state: 'failed', error: errorText(error), moneyWritten };
  }
  await sql.begin((tx) =>
    insertAudit(tx, [
      {
        actor: options.actor,
        action: REPLAY_ACTION,
        entityType: 'dead_letter',
        entityId: id,
        data: {
          reason: options.reason,
          stream: letter.source.stream,
          streamId: letter.source.id,
          problem: letter.problem,
          kind: letter.kind,
          eventId: letter.eventId,
          userId: letter.userId,
          amountCents: letter.amountCents,
          applied,
        },
      },
    ]),
  );
  if (letter.userId !== null)
    await redis.srem(
      userDeadLettersKey(prefix, letter.userId),
      deadLetterMember(letter.source.stream, letter.source.id),
    );
  await redis.xdel(deadLetterKey(prefix), id);
  return { state: 'replayed', applied, letter };
}
