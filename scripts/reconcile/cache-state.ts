/**
 * Reading a user's cached account consistently, deciding whether it may be compared with Postgres,
 * and rebuilding it from Postgres without losing a hold the hot path reserves meanwhile.
 *
 * Redis may legitimately be ahead of Postgres: a hold is reserved in Redis and reaches Postgres only
 * when the ledger writer applies the outbox entry. The writer deletes an entry from its stream only
 * after committing it, so a shard's stream holds exactly the entries not yet in Postgres. We compare
 * a user only when that user's entries are drained: no entry of the user's shard stream names them,
 * both before and after the Postgres read, and the cached account is byte-identical across the two
 * reads (so nothing moved in between). Otherwise the user is deferred to a later run.
 */
import type { Sql } from '../../shared/db/client.ts';
import { usdcToCentsCeil } from '../../shared/money.ts';
import { type AccountSnapshot, accountFromPostgres, ensureAccount } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { ACCOUNT, userKeys } from '../../shared/redis/keys.ts';
import { limits } from './limits.ts';

export interface CachedAccount {
  exists: boolean;
  account: Record<string, string>;
  holds: Record<string, string>;
  cards: Record<string, string>;
  /** Outbox entries of the user's shard that name the user (not yet written to Postgres). */
  pendingEntries: number;
  /** The shard's stream was longer than the scan limit: the user counts as not drained. */
  scanIncomplete: boolean;
  /** A canonical text of account + holds + cards, compared between two reads. */
  fingerprint: string;
}

/** Sorted `k=v` lines: the same text in TypeScript and in the Lua guard below. */
export function fingerprintOf(hash: Record<string, string>): string {
  return Object.keys(hash)
    .sort()
    .map((k) => `${k}=${hash[k]}`)
    .join('\n');
}

function pairs(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(flat))
    for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  else if (flat !== null && typeof flat === 'object') Object.assign(out, flat);
  return out;
}

/** Reads the account, its holds and cards, and the user's pending outbox entries in one MULTI. */
export async function readCachedAccount(
  redis: Redis,
  prefix: string,
  userId: string,
  scanMax: number = limits.outboxScanMax,
): Promise<CachedAccount> {
  const keys = userKeys(prefix, userId);
  const replies = await redis
    .multi()
    .hgetall(keys.account)
    .hgetall(keys.holds)
    .hgetall(keys.cards)
    .xrange(keys.outbox, '-', '+', 'COUNT', scanMax + 1)
    .exec();
  if (replies === null) throw new Error('redis MULTI was aborted');
  for (const [error] of replies) if (error !== null) throw error;
  const account = pairs(replies[0]?.[1]);
  const holds = pairs(replies[1]?.[1]);
  const cards = pairs(replies[2]?.[1]);
  const entries = (replies[3]?.[1] ?? []) as [string, string[]][];
  let pendingEntries = 0;
  for (const [, fields] of entries) if (fields.some((f) => f.includes(userId))) pendingEntries++;
  return {
    exists: Object.keys(account).length > 0,
    account,
    holds,
    cards,
    pendingEntries,
    scanIncomplete: entries.length > scanMax,
    fingerprint: `${fingerprintOf(account)}\n--\n${fingerprintOf(holds)}\n--\n${fingerprintOf(cards)}`,
  };
}

export function isDrained(cached: CachedAccount): boolean {
  return cached.pendingEntries === 0 && !cached.scanIncomplete;
}

export interface FieldDiff {
  field: string;
  redis: string | null;
  postgres: string | null;
}

/**
 * What differs between the cached account and the one Postgres implies. Day spend and velocity are
 * Redis-only counters and the build stamp and version are bookkeeping: they are not compared.
 */
export function diffAccount(cached: CachedAccount, expected: AccountSnapshot): FieldDiff[] {
  const want: Record<string, string> = {
    [ACCOUNT.status]: expected.status,
    [ACCOUNT.creditLimitCents]: expected.creditLimitCents.toString(),
    [ACCOUNT.dailyLimitCents]: expected.dailyLimitCents.toString(),
    [ACCOUNT.blockedMccs]: expected.blockedMccs.join(','),
    [ACCOUNT.debtOnchainUsdc]: expected.debtOnchainUsdc.toString(),
    [ACCOUNT.debtOnchainCents]: usdcToCentsCeil(expected.debtOnchainUsdc).toString(),
    [ACCOUNT.unsettledCents]: expected.unsettledCents.toString(),
    [ACCOUNT.holdsCents]: expected.holdsCents.toString(),
  };
  for (const [assetId, c] of expected.collateral) {
    want[ACCOUNT.collateralPrefix + assetId] = c.amountBase.toString();
    want[ACCOUNT.pendingWithdrawalPrefix + assetId] = c.pendingWithdrawalBase.toString();
  }
  const diffs: FieldDiff[] = [];
  const ignored = new Set<string>([ACCOUNT.version, ACCOUNT.builtAtMs]);
  const fields = new Set([...Object.keys(want), ...Object.keys(cached.account)]);
  for (const field of [...fields].sort()) {
    if (ignored.has(field)) continue;
    const isCollateral =
      field.startsWith(ACCOUNT.collateralPrefix) || field.startsWith(ACCOUNT.pendingWithdrawalPrefix);
    const r = cached.account[field] ?? null;
    const p = want[field] ?? null;
    // A zero position may be absent on either side.
    if (isCollateral && (r ?? '0') === (p ?? '0')) continue;
    if (r !== p) diffs.push({ field, redis: r, postgres: p });
  }
  const holds = new Map(expected.holds.map((h) => [h.authorizationId, h.heldCents.toString()]));
  for (const id of new Set([...holds.keys(), ...Object.keys(cached.holds)])) {
    const r = cached.holds[id] ?? null;
    const p = holds.get(id) ?? null;
    if (r !== p) diffs.push({ field: `hold:${id}`, redis: r, postgres: p });
  }
  for (const card of expected.cards) {
    const want = `${card.status}|${card.frozen ? 1 : 0}`;
    const r = cached.cards[card.cardId] ?? null;
    if (r !== want) diffs.push({ field: `card:${card.cardId}`, redis: r, postgres: want });
  }
  return diffs;
}

/**
 * True when Redis holds more than Postgres for some authorization (or in total): rebuilding from
 * Postgres would hand that credit back to the user, against "credit shrinks fast, grows slow", while
 * Stripe may still capture it. Such drift is reported, never repaired automatically.
 */
export function redisHoldsAhead(diffs: readonly FieldDiff[]): boolean {
  return diffs.some((d) => {
    if (!d.field.startsWith('hold:') && d.field !== ACCOUNT.holdsCents) return false;
    return BigInt(d.redis ?? '0') > BigInt(d.postgres ?? '0');
  });
}

// Deletes the account only if it is exactly as the caller last read it and the user has no entry in
// the shard's stream: then Postgres holds everything Redis did, and the rebuild loses nothing. While
// the account is missing, the hot path's scripts answer `missing` and rebuild it from Postgres
// themselves; installAccount never overwrites an account that exists, so the two rebuilds cannot race.
const GUARDED_DELETE = `
local function fp(key)
  local flat = redis.call('HGETALL', key)
  local lines = {}
  for i = 1, #flat, 2 do lines[#lines + 1] = flat[i] .. '=' .. flat[i + 1] end
  table.sort(lines)
  return table.concat(lines, '\\n')
end
local now = fp(KEYS[1]) .. '\\n--\\n' .. fp(KEYS[2]) .. '\\n--\\n' .. fp(KEYS[3])
if now ~= ARGV[1] then return 0 end
local entries = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', tonumber(ARGV[3]) + 1)
if #entries > tonumber(ARGV[3]) then return -1 end
for _, e in ipairs(entries) do
  for _, v in ipairs(e[2]) do
    if string.find(v, ARGV[2], 1, true) then return -1 end
  end
end
redis.call('DEL', KEYS[1])
return 1
`;

export type RebuildResult = 'rebuilt' | 'changed' | 'pending' | 'missing_user';

/**
 * Rebuilds a user's cached account from Postgres, guarded by the fingerprint read before the
 * comparison (see GUARDED_DELETE). Fields Postgres owns (limits, status, collateral, debt, unsettled,
 * holds of open authorizations, cards) come back as Postgres has them.
 */
export async function rebuildFromPostgres(
  redis: Redis,
  sql: Sql,
  prefix: string,
  userId: string,
  expectedFingerprint: string,
  nowMs: number,
): Promise<RebuildResult> {
  const keys = userKeys(prefix, userId);
  const deleted = await redis.eval(
    GUARDED_DELETE,
    4,
    keys.account,
    keys.holds,
    keys.cards,
    keys.outbox,
    expectedFingerprint,
    userId,
    limits.outboxScanMax,
  );
  if (deleted === 0) return 'changed';
  if (deleted === -1) return 'pending';
  return (await ensureAccount(redis, sql, prefix, userId, nowMs)) ? 'rebuilt' : 'missing_user';
}

export type Comparison =
  | { state: 'not_cached' }
  | { state: 'missing_user' }
  | { state: 'deferred'; reason: 'pending_entries' | 'changed_during_read' }
  | { state: 'compared'; diffs: FieldDiff[]; fingerprint: string; expected: AccountSnapshot };

/**
 * Compares one user's cached account with Postgres, only when the comparison means something: the
 * account is cached, the user's outbox entries are drained, and nothing moved while Postgres was read.
 */
export async function compareUser(
  redis: Redis,
  sql: Sql,
  prefix: string,
  userId: string,
  nowMs: number,
): Promise<Comparison> {
  const before = await readCachedAccount(redis, prefix, userId);
  if (!before.exists) return { state: 'not_cached' };
  if (!isDrained(before)) return { state: 'deferred', reason: 'pending_entries' };
  const expected = await accountFromPostgres(sql, userId, nowMs);
  if (expected === null) return { state: 'missing_user' };
  const after = await readCachedAccount(redis, prefix, userId);
  if (!isDrained(after)) return { state: 'deferred', reason: 'pending_entries' };
  if (after.fingerprint !== before.fingerprint) return { state: 'deferred', reason: 'changed_during_read' };
  return { state: 'compared', diffs: diffAccount(after, expected), fingerprint: after.fingerprint, expected };
}
