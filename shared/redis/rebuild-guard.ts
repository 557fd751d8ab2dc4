/**
 * The one guard every rebuild of a cached account from Postgres goes through (the cache
 * reconciliation job and the indexer's repair of users whose write-through failed).
 *
 * Redis is ahead of Postgres for a user while any of that user's money has not reached Postgres: an
 * outbox entry not yet written (the ledger writer deletes an entry from its shard stream only after
 * committing it, so the stream holds exactly the unwritten entries, however far the writer lags), or
 * an entry the writer dead-lettered (its effect stays in Redis until an operator replays it; the writer
 * records it in the user's dead-letter set before it deletes the entry, so the user is covered by one
 * or the other at every instant). Rebuilding such a user from Postgres would hand back credit the user
 * has spent. It is an invariant that no account is deleted for a rebuild while the user has either.
 */
import type { Sql } from '../db/client.ts';
import { ensureAccount } from './account.ts';
import type { Redis } from './client.ts';
import { userDeadLettersKey, userKeys } from './keys.ts';

/** Outbox entries of one shard scanned by the guard; a longer stream counts as "not written". */
export const OUTBOX_SCAN_MAX_DEFAULT = 2_000;

/** Sorted `k=v` lines: the same text in TypeScript and in the Lua guard below. */
export function fingerprintOf(hash: Record<string, string>): string {
  return Object.keys(hash)
    .sort()
    .map((k) => `${k}=${hash[k]}`)
    .join('\n');
}

/** The fingerprint of a cached account: account, holds and cards hashes, as the guard computes it. */
export function accountFingerprint(
  account: Record<string, string>,
  holds: Record<string, string>,
  cards: Record<string, string>,
): string {
  return `${fingerprintOf(account)}\n--\n${fingerprintOf(holds)}\n--\n${fingerprintOf(cards)}`;
}

/** How many of a shard's entries (flat field lists) name `userId`, as the Lua guard counts them. */
export function entriesNaming(entries: readonly [string, readonly string[]][], userId: string): number {
  let n = 0;
  for (const [, fields] of entries) if (fields.some((f) => f.includes(userId))) n++;
  return n;
}

// Deletes the account only if no money of the user is missing from Postgres (no entry of the shard's
// stream names the user, the user's dead-letter set is empty) and, when ARGV[1] is not empty, the
// account is exactly as the caller last read it. While the account is missing, the hot path's scripts
// answer `missing` and rebuild it from Postgres themselves; installAccount never overwrites an account
// that exists, so the two rebuilds cannot race. Returns 1 deleted, 0 changed, -1 money not written.
const GUARDED_DELETE = `
if redis.call('SCARD', KEYS[5]) > 0 then return -1 end
local entries = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', tonumber(ARGV[3]) + 1)
if #entries > tonumber(ARGV[3]) then return -1 end
for _, e in ipairs(entries) do
  for _, v in ipairs(e[2]) do
    if string.find(v, ARGV[2], 1, true) then return -1 end
  end
end
if ARGV[1] ~= '' then
  local function fp(key)
    local flat = redis.call('HGETALL', key)
    local lines = {}
    for i = 1, #flat, 2 do lines[#lines + 1] = flat[i] .. '=' .. flat[i + 1] end
    table.sort(lines)
    return table.concat(lines, '\\n')
  end
  local now = fp(KEYS[1]) .. '\\n--\\n' .. fp(KEYS[2]) .. '\\n--\\n' .. fp(KEYS[3])
  if now ~= ARGV[1] then return 0 end
end
redis.call('DEL', KEYS[1])
return 1
`;

export type RebuildResult = 'rebuilt' | 'changed' | 'pending' | 'missing_user';

export interface RebuildOptions {
  /** The fingerprint read before deciding to rebuild; null rebuilds whatever the account holds now. */
  expectedFingerprint: string | null;
  nowMs?: number;
  outboxScanMax?: number;
}

/**
 * Rebuilds a user's cached account from Postgres unless Postgres may lag behind Redis for the user
 * ('pending': an unwritten or dead-lettered entry) or the account changed since the caller read it
 * ('changed'). Fields Postgres owns come back as Postgres has them.
 *
 * @example await rebuildIfWritten(redis, sql, prefix, userId, { expectedFingerprint: null })
 */
export async function rebuildIfWritten(
  redis: Redis,
  sql: Sql,
  prefix: string,
  userId: string,
  options: RebuildOptions,
): Promise<RebuildResult> {
  const keys = userKeys(prefix, userId);
  const deleted = await redis.eval(
    GUARDED_DELETE,
    5,
    keys.account,
    keys.holds,
    keys.cards,
    keys.outbox,
    userDeadLettersKey(prefix, userId),
    options.expectedFingerprint ?? '',
    userId,
    options.outboxScanMax ?? OUTBOX_SCAN_MAX_DEFAULT,
  );
  if (deleted === 0) return 'changed';
  if (deleted === -1) return 'pending';
  return (await ensureAccount(redis, sql, prefix, userId, options.nowMs ?? Date.now()))
    ? 'rebuilt'
    : 'missing_user';
}
