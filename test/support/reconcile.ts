/**
 * Helpers for the reconciliation tests: drains the hot path's outbox streams into Postgres with the
 * ledger writer's own parse and apply (what the writer process does, without its loop), and runs a
 * statement as superuser with the append-only triggers off, to inject the damage reconciliation must find.
 */
import postgres from 'postgres';
import { applyBatch, type ParsedEntry, parseEntry } from '../../ledger-writer/write-batch.ts';
import type { Sql } from '../../shared/db/client.ts';
import { deleteKeys, type Redis, scanKeys } from '../../shared/redis/client.ts';
import { allOutboxKeys, outboxKey } from '../../shared/redis/keys.ts';

/**
 * Applies every entry of every shard stream to Postgres, then deletes them (as the writer acks).
 * `skipShards`: streams left undrained, as if their writer lagged (their users' money stays Redis-only).
 */
export async function drainOutbox(
  redis: Redis,
  sql: Sql,
  prefix: string,
  options: { skipShards?: readonly number[] } = {},
): Promise<number> {
  let applied = 0;
  const skipped = new Set((options.skipShards ?? []).map((shard) => outboxKey(prefix, shard)));
  for (const stream of allOutboxKeys(prefix)) {
    if (skipped.has(stream)) continue;
    const raw = (await redis.xrange(stream, '-', '+')) as [string, string[]][];
    if (raw.length === 0) continue;
    const parsed: ParsedEntry[] = [];
    for (const [id, flat] of raw) {
      const fields: Record<string, string> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
      const result = parseEntry({ stream, id, fields });
      if (!result.ok) throw new Error(`outbox entry ${id} is invalid: ${result.error}`);
      parsed.push(result.entry);
    }
    applied += (await applyBatch(sql, parsed)).applied;
    await redis.xdel(stream, ...raw.map(([id]) => id));
  }
  return applied;
}

/**
 * Runs `statement` as the connecting superuser with user triggers disabled for this session only
 * (session_replication_role = replica), which is how damage gets past the append-only and balance
 * triggers. Tests only.
 */
export async function asSuperuserWithoutTriggers(databaseUrl: string, statement: string): Promise<void> {
  const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.begin(async (tx) => {
      await tx.unsafe('set local session_replication_role = replica');
      await tx.unsafe(statement);
    });
  } finally {
    await admin.end({ timeout: 5 });
  }
}

/**
 * Redis loses everything it had for the user, as in an empty restart; the outbox is booked first, so
 * nothing else is lost. Every primary's keys are scanned (on a cluster the user's keys live on one
 * shard, not on the node a plain SCAN would ask) and deleted one by one. Throws when the user had none.
 */
export async function loseUserData(redis: Redis, sql: Sql, prefix: string, userId: string): Promise<void> {
  await drainOutbox(redis, sql, prefix);
  const keys: string[] = [];
  await scanKeys(redis, `${prefix}*:u:${userId}*`, async (batch) => {
    keys.push(...batch);
  });
  if (keys.length === 0) throw new Error(`no Redis key of user ${userId} to lose`);
  await deleteKeys(redis, keys);
}
