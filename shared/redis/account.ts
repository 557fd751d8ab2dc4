/**
 * A user's cached account in Redis: built from Postgres (the system of record) when missing, and
 * updated in place by the services that own each part (the hot path: holds; the ledger writer and
 * lifecycle handlers: unsettled; the indexer: collateral and on-chain debt; the controls writers — the
 * Supabase bridge for the user's, ops commands for the program's (shared/controls/program.ts) — card
 * status and freeze, account status and limits, via `writeControls`). Every change bumps the account's
 * version, which the hot path's check-and-reserve uses to detect a change between its read and its reserve.
 */
import type { CollateralHolding } from '../credit.ts';
import type { Sql } from '../db/client.ts';
import { type AuthorizationStateRow, authorizationStates } from '../db/queries/authorizations.ts';
import { type EffectiveCard, type UserControls, userControls } from '../db/queries/controls.ts';
import { RetryableError } from '../errors.ts';
import { DOUBLE_EXACT_MAX, usdcToCentsCeil } from '../money.ts';
import { capturedCentsListed } from '../policy/captured-listed.ts';
import { policyLimits } from '../policy/limits.ts';
import { AUTH_STATE, BLOCKED_MCCS_SEPARATOR, CARD_ENTRY_SEPARATOR } from '../policy/redis-fields.ts';
import type { Redis } from './client.ts';
import { ACCOUNT, cardIndexKey, channels, pricesKey, userKeys } from './keys.ts';
import { publishToAll } from './pubsub.ts';

/** A card as the hot path sees it: `frozen` is the effective freeze (the user's or the program's). */
export type CardState = EffectiveCard;

export interface OpenHold {
  authorizationId: string;
  heldCents: bigint;
  expiresAtMs: number;
}

export interface AccountSnapshot {
  userId: string;
  status: string;
  creditLimitCents: bigint;
  dailyLimitCents: bigint;
  blockedMccs: string[];
  debtOnchainUsdc: bigint;
  unsettledCents: bigint;
  holdsCents: bigint;
  collateral: Map<string, { amountBase: bigint; pendingWithdrawalBase: bigint }>;
  cards: CardState[];
  holds: OpenHold[];
  /** Cents approved today (UTC), so the daily limit survives a cache rebuild. */
  spentTodayCents: bigint;
  /**
   * The Postgres fallback's decisions not yet adopted into the cache (event id, stored answer): their
   * holds are in `holds` already, so the rebuild stores their answers as ADOPT_FALLBACK would, and the
   * adoption that follows finds them 'known' instead of adding each hold a second time (chaos bug 10).
   */
  pendingFallbackAnswers: { eventId: string; stored: string }[];
  /**
   * The lifecycle script's per-authorization state (`authState`, shared/lifecycle/lua.ts) as Postgres
   * tells it, for the user's authorizations of the last `authorizationStateTtlS`: stored with the
   * account unless the authorization's state is still cached (docs/chaos.md item 11).
   */
  authorizationStates: RestoredAuthorizationState[];
}

/** One authorization's `authState` fields (name, value), as the rebuild stores them. */
export interface RestoredAuthorizationState {
  authorizationId: string;
  fields: [string, string][];
}

/**
 * The `authState` fields Postgres's records give back for one authorization (none: nothing to store,
 * as for an authorization the script never saw). Every field is the script's value or errs towards
 * less credit:
 * - `cap` is the captured total the writer booked (exact);
 * - `ref` is the refunds credited, not less any refund reversal (at or above the script's: a later
 *   refund is credited less, never again);
 * - `rvh` is the refunds held for review net of what captures credited back (exact);
 * - `t` is set for a terminal status (`closed`, `reversed`, `expired`: exact);
 * - `w`, for a closed approved authorization, is read from its stored `closed` event as the script
 *   read it: the captured total Stripe listed, or -1 when it listed none (exact: the script's own value
 *   then was the captured total only when that left nothing held, and with nothing held `w` moves
 *   nothing). With no `closed` event stored, it is what is held plus what was captured: exact when
 *   Stripe listed a total, else the hold is kept until captures reach it (held longer, never released
 *   early);
 * - `ver` is the requests we decided × 1e10, at or below the script's (which adds the event's time and
 *   counts Stripe's own requests): an older `updated` of an earlier request is refused as before the
 *   loss; one of the same request still applies (docs/chaos.md item 11 says which way that moves).
 * `lv` (the newest version Stripe described) and the applied-event markers are not rebuilt here.
 */
export function restoredAuthorizationState(row: AuthorizationStateRow): RestoredAuthorizationState | null {
  const fields: [string, string][] = [];
  for (const [name, value] of [
    ['capturedCents', row.capturedCents],
    ['refundedCents', row.refundedCents],
    ['reviewHeldCents', row.reviewHeldCents],
    ['heldCents', row.heldCents],
  ] as const) {
    assertDoubleExact(name, value);
  }
  if (row.capturedCents !== 0n) fields.push([AUTH_STATE.capturedCents, row.capturedCents.toString()]);
  if (row.refundedCents !== 0n) fields.push([AUTH_STATE.refundedCents, row.refundedCents.toString()]);
  if (row.reviewHeldCents !== 0n) fields.push([AUTH_STATE.reviewHeldCents, row.reviewHeldCents.toString()]);
  if (row.status !== 'pending') fields.push([AUTH_STATE.terminal, '1']);
  if (row.status === 'closed' && row.approved) {
    const listed =
      row.closedTransactions === undefined
        ? (row.heldCents + row.capturedCents).toString()
        : String(capturedCentsListed(row.closedTransactions));
    fields.push([AUTH_STATE.closedCapturedCents, listed]);
  }
  if (row.requestsDecided > 0) fields.push([AUTH_STATE.version, String(row.requestsDecided * 1e10)]);
  return fields.length === 0 ? null : { authorizationId: row.id, fields };
}

/** Values the Lua side does arithmetic on must stay exact as doubles. */
export function assertDoubleExact(name: string, value: bigint): void {
  if (value > DOUBLE_EXACT_MAX || value < -DOUBLE_EXACT_MAX) {
    throw new RangeError(`${name} exceeds the exact range of a Redis Lua number`);
  }
}

const DAY_MS = 86_400_000;
/** The last day utcDay formatted: every decision asks for it, and it changes once a day. */
let lastDay = { startMs: 0, endMs: 0, text: '' };

/**
 * The UTC day of `nowMs` as `YYYYMMDD` (the daily spend's key). JavaScript time has no leap seconds, so
 * every UTC day is exactly DAY_MS long; the day last formatted is kept, since formatting a date cost the
 * hot path ~2 µs per decision (docs/hot-path.md, "Cost per decision").
 */
export function utcDay(nowMs: number): string {
  if (nowMs >= lastDay.startMs && nowMs < lastDay.endMs) return lastDay.text;
  const startMs = Math.floor(nowMs / DAY_MS) * DAY_MS;
  const text = new Date(startMs).toISOString().slice(0, 10).replaceAll('-', '');
  lastDay = { startMs, endMs: startMs + DAY_MS, text };
  return text;
}

/** Reads everything the cache needs about one user from Postgres. Null when the user does not exist. */
export async function accountFromPostgres(
  sql: Sql,
  userId: string,
  nowMs: number,
): Promise<AccountSnapshot | null> {
  // The program's and the user's controls, effective values (ops freeze or user freeze; the daily
  // limit after its cool-down and under the ceiling): the same reading the Postgres fallback uses.
  const user = await userControls(sql, userId, nowMs);
  if (user === null) return null;
  const dayStart = new Date(Math.floor(nowMs / 86_400_000) * 86_400_000);
  const [account, positions, holds, spent, states] = await Promise.all([
    sql<{ debt_onchain_usdc: string; unsettled_cents: string; holds_cents: string }[]>`
      select debt_onchain_usdc::text, unsettled_cents, holds_cents from credit_accounts where user_id = ${userId}`,
    sql<{ asset_id: string; collateral_base: string; pending_withdrawal_base: string }[]>`
      select asset_id, collateral_base::text, pending_withdrawal_base::text from positions where user_id = ${userId}`,
    // One statement, so one snapshot: the holds, and the fallback's grants not yet adopted (each one's
    // hold is then among the holds read).
    sql<{ id: string; held_cents: string; expires_at: Date | null; stored: string | null }[]>`
      select id, held_cents, expires_at, null as stored from authorizations
      where user_id = ${userId} and held_cents > 0 and status in ('pending', 'closed')
      union all
      select event_id, null, null, stored from fallback_decisions where user_id = ${userId} and adopted_at is null`,
    sql<{ spent: string }[]>`
      select coalesce(sum(approved_cents), 0)::text as spent from authorizations
      where user_id = ${userId} and approved and created_at >= ${dayStart}`,
    // The cache keeps an authorization's state this long after its last event (every script that
    // touches it renews the TTL), so an older one has none to restore.
    authorizationStates(sql, userId, new Date(nowMs - policyLimits.authorizationStateTtlS * 1000)),
  ]);
  const acct = account[0];
  return {
    userId,
    status: user.status,
    creditLimitCents: user.creditLimitCents,
    dailyLimitCents: user.dailyLimitCents,
    blockedMccs: user.blockedMccs,
    debtOnchainUsdc: BigInt(acct?.debt_onchain_usdc ?? '0'),
    unsettledCents: BigInt(acct?.unsettled_cents ?? '0'),
    holdsCents: BigInt(acct?.holds_cents ?? '0'),
    collateral: new Map(
      positions.map((p) => [
        p.asset_id,
        { amountBase: BigInt(p.collateral_base), pendingWithdrawalBase: BigInt(p.pending_withdrawal_base) },
      ]),
    ),
    cards: user.cards,
    holds: holds
      .flatMap((h) => (h.stored !== null ? [] : [h]))
      .map((h) => ({
        authorizationId: h.id,
        heldCents: BigInt(h.held_cents),
        expiresAtMs: h.expires_at?.getTime() ?? nowMs + 7 * 86_400_000,
      })),
    spentTodayCents: BigInt(spent[0]?.spent ?? '0'),
    pendingFallbackAnswers: holds.flatMap((h) =>
      h.stored === null ? [] : [{ eventId: h.id, stored: h.stored }],
    ),
    authorizationStates: states.flatMap((row) => restoredAuthorizationState(row) ?? []),
  };
}

// Installs a snapshot only if the account is absent (a rebuild never overwrites live holds) and no
// writer changed the user since the snapshot was read (KEYS[6] is the change counter, ARGV[last]
// its value before the snapshot): returns 1 installed, 0 already present, -1 changed meanwhile. KEYS[7…]
// are the decision keys of the fallback's answers not yet adopted (stored unless a key is there), then
// the authState keys of the authorizations whose state is restored (each only if it is not there: a
// state that outlived the account, say an account invalidated and rebuilt, is the live one).
const INSTALL = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if (redis.call('GET', KEYS[6]) or '0') ~= ARGV[#ARGV] then return -1 end
local n = tonumber(ARGV[1])
local fields = {}
for i = 1, n * 2 do fields[i] = ARGV[1 + i] end
redis.call('HSET', KEYS[1], unpack(fields))
local at = 2 + n * 2
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
local cards = tonumber(ARGV[at]); at = at + 1
for i = 1, cards do redis.call('HSET', KEYS[2], ARGV[at], ARGV[at + 1]); at = at + 2 end
local holds = tonumber(ARGV[at]); at = at + 1
for i = 1, holds do
  redis.call('HSET', KEYS[3], ARGV[at], ARGV[at + 1])
  redis.call('ZADD', KEYS[4], ARGV[at + 2], ARGV[at])
  at = at + 3
end
local spent = tonumber(ARGV[at]); at = at + 1
if spent > 0 then redis.call('SET', KEYS[5], spent, 'EX', 172800) end
local answers = tonumber(ARGV[at]); at = at + 1
for i = 1, answers do
  redis.call('SET', KEYS[6 + i], ARGV[at], 'NX', 'EX', tonumber(ARGV[at + 1]))
  at = at + 2
end
local states = tonumber(ARGV[at]); at = at + 1
local stateTtl = tonumber(ARGV[at]); at = at + 1
for i = 1, states do
  local key = KEYS[6 + answers + i]
  local n = tonumber(ARGV[at]); at = at + 1
  if redis.call('EXISTS', key) == 0 then
    for j = 0, n - 1 do redis.call('HSET', key, ARGV[at + j * 2], ARGV[at + j * 2 + 1]) end
    redis.call('EXPIRE', key, stateTtl)
  end
  at = at + n * 2
end
return 1
`;

/**
 * Writes a snapshot into Redis unless the account is already cached or the user changed since
 * `changesBefore` (read with `readChanges` before the snapshot). Returns 'installed', 'present' or 'changed'.
 */
/**
 * The version stamp of a freshly built account: `nowMs × 1000 + r` (r random below 1000), an integer
 * that later changes increment. A hot path keeps a snapshot of the account under its version (see
 * hot-path/decision/engine.ts), so a rebuilt account must never reuse a version the old one had: a
 * later build starts at least 1000 per millisecond above where any earlier build started, far beyond
 * the changes an account sees, and below 2^53 until the year 2255.
 */
export function installedVersion(nowMs: number): string {
  return String(nowMs * 1000 + Math.floor(Math.random() * 1000));
}

export async function installAccount(
  redis: Redis,
  prefix: string,
  snapshot: AccountSnapshot,
  nowMs: number,
  changesBefore: string,
): Promise<'installed' | 'present' | 'changed'> {
  const keys = userKeys(prefix, snapshot.userId);
  for (const [name, value] of [
    ['creditLimitCents', snapshot.creditLimitCents],
    ['dailyLimitCents', snapshot.dailyLimitCents],
    ['unsettledCents', snapshot.unsettledCents],
    ['holdsCents', snapshot.holdsCents],
    ['spentTodayCents', snapshot.spentTodayCents],
  ] as const) {
    assertDoubleExact(name, value);
  }
  const fields: string[] = [
    ACCOUNT.version,
    installedVersion(nowMs),
    ACCOUNT.status,
    snapshot.status,
    ACCOUNT.creditLimitCents,
    snapshot.creditLimitCents.toString(),
    ACCOUNT.dailyLimitCents,
    snapshot.dailyLimitCents.toString(),
    ACCOUNT.blockedMccs,
    snapshot.blockedMccs.join(BLOCKED_MCCS_SEPARATOR),
    ACCOUNT.debtOnchainUsdc,
    snapshot.debtOnchainUsdc.toString(),
    ACCOUNT.debtOnchainCents,
    usdcToCentsCeil(snapshot.debtOnchainUsdc).toString(),
    ACCOUNT.unsettledCents,
    snapshot.unsettledCents.toString(),
    ACCOUNT.holdsCents,
    snapshot.holdsCents.toString(),
    ACCOUNT.builtAtMs,
    String(nowMs),
  ];
  for (const [assetId, c] of snapshot.collateral) {
    fields.push(ACCOUNT.collateralPrefix + assetId, c.amountBase.toString());
    fields.push(ACCOUNT.pendingWithdrawalPrefix + assetId, c.pendingWithdrawalBase.toString());
  }
  const args: (string | number)[] = [fields.length / 2, ...fields, snapshot.cards.length];
  for (const card of snapshot.cards) args.push(card.cardId, encodeCard(card));
  args.push(snapshot.holds.length);
  for (const hold of snapshot.holds)
    args.push(hold.authorizationId, hold.heldCents.toString(), hold.expiresAtMs);
  args.push(snapshot.spentTodayCents.toString());
  args.push(snapshot.pendingFallbackAnswers.length);
  for (const answer of snapshot.pendingFallbackAnswers) args.push(answer.stored, policyLimits.decisionTtlS);
  args.push(snapshot.authorizationStates.length, policyLimits.authorizationStateTtlS);
  for (const state of snapshot.authorizationStates) args.push(state.fields.length, ...state.fields.flat());
  args.push(changesBefore);
  const installed = await redis.eval(
    INSTALL,
    6 + snapshot.pendingFallbackAnswers.length + snapshot.authorizationStates.length,
    keys.account,
    keys.cards,
    keys.holds,
    keys.holdExpiries,
    keys.daySpend(utcDay(nowMs)),
    keys.changes,
    ...snapshot.pendingFallbackAnswers.map((answer) => keys.decision(answer.eventId)),
    ...snapshot.authorizationStates.map((state) => keys.authState(state.authorizationId)),
    ...args,
  );
  if (snapshot.cards.length > 0) {
    await redis.hset(cardIndexKey(prefix), ...snapshot.cards.flatMap((c) => [c.cardId, snapshot.userId]));
  }
  return installed === 1 ? 'installed' : installed === 0 ? 'present' : 'changed';
}

/** The user's change counter, read before taking a Postgres snapshot for `installAccount`. */
export async function readChanges(redis: Redis, prefix: string, userId: string): Promise<string> {
  return (await redis.get(userKeys(prefix, userId).changes)) ?? '0';
}

export function encodeCard(card: Pick<CardState, 'status' | 'frozen'>): string {
  return `${card.status}${CARD_ENTRY_SEPARATOR}${card.frozen ? 1 : 0}`;
}

/**
 * Loads the user from Postgres and installs it if absent, retrying when a writer changed the user
 * while the snapshot was being read. Returns false when the user does not exist.
 */
export async function ensureAccount(
  redis: Redis,
  sql: Sql,
  prefix: string,
  userId: string,
  nowMs = Date.now(),
): Promise<boolean> {
  for (let attempt = 0; attempt < 5; attempt++) {
    if ((await redis.exists(userKeys(prefix, userId).account)) === 1) return true;
    const changesBefore = await readChanges(redis, prefix, userId);
    const snapshot = await accountFromPostgres(sql, userId, nowMs);
    if (snapshot === null) return false;
    if ((await installAccount(redis, prefix, snapshot, nowMs, changesBefore)) !== 'changed') return true;
  }
  throw new RetryableError(
    'redis_account_contended',
    `account of ${userId} kept changing while being rebuilt`,
  );
}

// Replaces the chain-owned fields (collateral, pending withdrawals, on-chain debt) of a cached account
// and, once per event key, moves unsettled spend that the chain has now recorded.
const WRITE_CHAIN_STATE = `
redis.call('INCR', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local all = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(all) do
  local p = string.sub(f, 1, 2)
  if p == 'c:' or p == 'w:' then redis.call('HDEL', KEYS[1], f) end
end
local n = tonumber(ARGV[1])
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[2 + i * 2], ARGV[3 + i * 2]) end
local at = 2 + n * 2
redis.call('HSET', KEYS[1], 'debt', ARGV[at], 'debtc', ARGV[at + 1])
local delta = tonumber(ARGV[at + 2])
if delta ~= 0 and redis.call('SET', KEYS[2], '1', 'NX', 'EX', 2592000) then
  redis.call('HINCRBY', KEYS[1], 'uns', delta)
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
`;

export interface ChainState {
  collateral: Map<string, { amountBase: bigint; pendingWithdrawalBase: bigint }>;
  debtOnchainUsdc: bigint;
  /** Optional: unsettled cents to move (negative) once, keyed by `eventKey` (e.g. a settlement ref). */
  unsettledCentsDelta?: { eventKey: string; amountCents: bigint };
}

/**
 * Write-through from the indexer after its Postgres transaction commits. Absolute values, so a
 * repeated write is harmless. Returns false when the account is not cached (it will be built from
 * Postgres on first use, which already has the new state).
 */
export async function writeChainState(
  redis: Redis,
  prefix: string,
  userId: string,
  state: ChainState,
): Promise<boolean> {
  const keys = userKeys(prefix, userId);
  const fields: string[] = [];
  for (const [assetId, c] of state.collateral) {
    fields.push(ACCOUNT.collateralPrefix + assetId, c.amountBase.toString());
    fields.push(ACCOUNT.pendingWithdrawalPrefix + assetId, c.pendingWithdrawalBase.toString());
  }
  const delta = state.unsettledCentsDelta;
  if (delta !== undefined) assertDoubleExact('unsettledCentsDelta', delta.amountCents);
  const result = await redis.eval(
    WRITE_CHAIN_STATE,
    3,
    keys.account,
    keys.applied(delta?.eventKey ?? 'none'),
    keys.changes,
    fields.length / 2,
    ...fields,
    state.debtOnchainUsdc.toString(),
    usdcToCentsCeil(state.debtOnchainUsdc).toString(),
    delta?.amountCents.toString() ?? '0',
  );
  return result === 1;
}

// Writes the effective controls of one user (absolute values read from Postgres in the changing
// transaction) unless a newer write got there first. KEYS: 1 account, 2 cards, 3 changes, 4 controls
// version. ARGV: 1 controls version, 2 status, 3 credit limit, 4 daily limit, 5 blocked MCCs,
// 6 card count, then cardId, "status|frozen" pairs. Returns 1 written, 0 not cached, -1 stale.
const WRITE_CONTROLS = `
redis.call('INCR', KEYS[3])
if tonumber(ARGV[1]) <= tonumber(redis.call('GET', KEYS[4]) or '-1') then return -1 end
redis.call('SET', KEYS[4], ARGV[1], 'EX', 2592000)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'st', ARGV[2], 'lim', ARGV[3], 'dlim', ARGV[4], 'mcc', ARGV[5])
local at = 7
for i = 1, tonumber(ARGV[6]) do
  redis.call('HSET', KEYS[2], ARGV[at], ARGV[at + 1])
  at = at + 2
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
`;

/**
 * The key of the last controls version written to a user's cache (beside the account hash, in its
 * shard). Not a field of the account hash: it outlives a rebuild, so a late, older write stays refused.
 */
export function controlsVersionKey(prefix: string, userId: string): string {
  return `${userKeys(prefix, userId).account}:cv`;
}

/**
 * Write-through of a user's controls after the transaction that changed them committed: card
 * status and freeze (the user's or the program's), account status, credit limit, daily limit and
 * blocked categories, all absolute. Every change bumps the change counter (a rebuild that read
 * Postgres before it will not install) and the account version (every hot-path process re-reads its
 * snapshot, which holds the credit limit). `controls.controlsVersion` orders concurrent writers: the
 * one whose transaction committed last wins even if its Redis write arrives first.
 * Returns 'written', 'not_cached' (built from Postgres on first use) or 'stale' (a newer write won).
 */
export async function writeControls(
  redis: Redis,
  prefix: string,
  controls: UserControls,
): Promise<'written' | 'not_cached' | 'stale'> {
  assertDoubleExact('creditLimitCents', controls.creditLimitCents);
  assertDoubleExact('dailyLimitCents', controls.dailyLimitCents);
  const keys = userKeys(prefix, controls.userId);
  const result = await redis.eval(
    WRITE_CONTROLS,
    4,
    keys.account,
    keys.cards,
    keys.changes,
    controlsVersionKey(prefix, controls.userId),
    controls.controlsVersion.toString(),
    controls.status,
    controls.creditLimitCents.toString(),
    controls.dailyLimitCents.toString(),
    controls.blockedMccs.join(BLOCKED_MCCS_SEPARATOR),
    controls.cards.length,
    ...controls.cards.flatMap((card) => [card.cardId, encodeCard(card)]),
  );
  if (controls.cards.length > 0) {
    await redis.hset(cardIndexKey(prefix), ...controls.cards.flatMap((c) => [c.cardId, controls.userId]));
  }
  return result === 1 ? 'written' : result === 0 ? 'not_cached' : 'stale';
}

// Bumps the change counter (a rebuild in flight will re-read) and updates a cached account's card.
const SET_CARD = `
redis.call('INCR', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
`;

/** Sets a card's status (e.g. from `issuing_card.updated`) in the cached account, if cached. */
export async function setCachedCard(
  redis: Redis,
  prefix: string,
  userId: string,
  card: CardState,
): Promise<void> {
  const keys = userKeys(prefix, userId);
  await redis.hset(cardIndexKey(prefix), card.cardId, userId);
  await redis.eval(SET_CARD, 3, keys.account, keys.cards, keys.changes, card.cardId, encodeCard(card));
  await publishToAll(redis, channels(prefix).cards, JSON.stringify({ cardId: card.cardId, userId }));
}

export interface PriceUpdate {
  assetId: string;
  answer: bigint;
  updatedAtS: number;
  roundId: bigint;
}

/** Stores the latest price and tells every hot-path process (they keep prices in memory). */
export async function publishPrice(redis: Redis, prefix: string, price: PriceUpdate): Promise<void> {
  const payload = JSON.stringify({
    assetId: price.assetId,
    answer: price.answer.toString(),
    updatedAtS: price.updatedAtS,
    roundId: price.roundId.toString(),
  });
  await redis.hset(pricesKey(prefix), price.assetId, payload);
  await publishToAll(redis, channels(prefix).prices, payload);
}

/** Users read per page by `warmAccounts`. */
const WARM_PAGE_SIZE = 500;

/**
 * Builds the cached account of every user that has none (the bulk form of `ensureAccount`), in
 * keyset pages. Returns how many users were checked and how many accounts were built.
 */
export async function warmAccounts(
  redis: Redis,
  sql: Sql,
  prefix: string,
): Promise<{ users: number; installed: number }> {
  let after = '00000000-0000-0000-0000-000000000000';
  let users = 0;
  let installed = 0;
  for (;;) {
    const page = await sql<
      { id: string }[]
    >`select id from users where id > ${after} order by id limit ${WARM_PAGE_SIZE}`;
    if (page.length === 0) break;
    for (const { id } of page) {
      users++;
      const existed = (await redis.exists(userKeys(prefix, id).account)) === 1;
      if (!existed && (await ensureAccount(redis, sql, prefix, id))) installed++;
    }
    after = page[page.length - 1]!.id;
  }
  return { users, installed };
}

/** The collateral holdings of a cached account hash (`c:<asset>` and `w:<asset>` fields). */
export function holdingsFromAccount(account: Record<string, string>): CollateralHolding[] {
  const holdings: CollateralHolding[] = [];
  for (const [field, value] of Object.entries(account)) {
    if (!field.startsWith(ACCOUNT.collateralPrefix)) continue;
    const assetId = field.slice(ACCOUNT.collateralPrefix.length);
    holdings.push({
      assetId,
      amountBase: BigInt(value),
      pendingWithdrawalBase: BigInt(account[ACCOUNT.pendingWithdrawalPrefix + assetId] ?? '0'),
    });
  }
  return holdings;
}
