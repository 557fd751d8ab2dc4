/**
 * The Lua scripts of the hot path. Each runs atomically over keys of one user's shard (see
 * shared/redis/keys.ts), so it works unchanged on a Redis Cluster.
 *
 * Exactness: Lua numbers are doubles. Every number these scripts do arithmetic on is in cents and
 * bounded far below 2^53 (limits.amountCentsMax, credit limits checked by assertDoubleExact); token
 * amounts and prices never enter a script — the exact bigint borrow power is computed in TypeScript
 * and passed in as `capCents`, guarded by the account's version stamp. Numbers are written back with
 * `%.0f`, which prints any integer below 2^53 exactly.
 *
 * Field names (A: the account hash, T: authState, O: the outbox entry's outcome fields) and the stored
 * answer's format (S) are spliced in from shared/policy, where the code that reads them takes them too.
 */
import { LUA_FIELDS } from '../../shared/policy/redis-fields.ts';
import { STORED_ANSWER_LUA as S } from '../../shared/policy/stored-answer.ts';
import { luaScript } from '../../shared/redis/script.ts';

const A = LUA_FIELDS.account;
const T = LUA_FIELDS.authState;
const O = LUA_FIELDS.outbox;
const LIST = LUA_FIELDS.blockedMccsSeparator;

/**
 * Check-and-reserve. Returns {'ok', approved, amount, reason} | {'dup', stored} | {'missing'} |
 * {'changed', version}.
 * Too late: when Stripe's own event for this request (the authorization's request count at or past
 * the one ARGV[16] says this decision makes, `lv` in authState) was applied first, the request is
 * declined `system_unavailable` without reserving: the attempt was given up on, Stripe has its answer,
 * and the event computed the hold without this grant.
 * KEYS: 1 account, 2 cards, 3 holds, 4 holdExpiries, 5 decision, 6 daySpend, 7 velocity, 8 outbox, 9 authState
 * ARGV: 1 expectedVersion, 2 cardId, 3 authorizationId, 4 amount, 5 controllable, 6 mcc, 7 nowMs,
 *       8 capCents, 9 stale, 10 velocityLimit, 11 globallyBlocked, 12 decisionId, 13 holdExpiresAtMs,
 *       14 decisionTtlS, 15 record, 16 authVersion, 17 authStateTtlS
 */
export const DECIDE = luaScript(`
local prior = redis.call('GET', KEYS[5])
if prior then
  -- A replayed approval is rewritten as it is, so this connection's WAIT (REDIS_WAIT_REPLICAS) covers
  -- the first decision too: WAIT counts acknowledgements of the connection's own last write.
  if string.sub(prior, 1, 2) == ${S.approvalPrefix} then redis.call('SET', KEYS[5], prior, 'KEEPTTL') end
  return {'dup', prior}
end
local v = redis.call('HGET', KEYS[1], ${A.version})
if not v then return {'missing'} end
if v ~= ARGV[1] then return {'changed', v} end
local amount = tonumber(ARGV[4])
local now = tonumber(ARGV[7])
local reason = ''
local card = redis.call('HGET', KEYS[2], ARGV[2])
if not card then
  reason = 'unknown_card'
else
  local status, frozen = string.match(card, ${LUA_FIELDS.cardEntryPattern})
  if status ~= 'active' then
    reason = 'card_inactive'
  elseif frozen == '1' then
    reason = 'card_frozen'
  elseif redis.call('HGET', KEYS[1], ${A.status}) ~= 'active' then
    reason = 'account_inactive'
  elseif ARGV[11] == '1' or (ARGV[6] ~= '' and not string.find(ARGV[6], ${LIST}, 1, true)
      and string.find(${LIST} .. (redis.call('HGET', KEYS[1], ${A.blockedMccs}) or '') .. ${LIST}, ${LIST} .. ARGV[6] .. ${LIST}, 1, true)) then
    -- In the user's list exactly (as shared/policy/rules.ts asks): an empty code, or one with the
    -- list's separator in it, is in no list of 4-digit codes (it matched the empty list before).
    reason = 'blocked_mcc'
  elseif redis.call('HGET', KEYS[9], ${T.terminal}) == '1' then
    reason = 'card_inactive'
  elseif tonumber(redis.call('HGET', KEYS[9], ${T.stripeVersion}) or '0') >= math.floor(tonumber(ARGV[16]) / 1e10) * 1e10 then
    -- Stripe already described this request (its created/updated counts it): this attempt runs after
    -- Stripe had its answer (a command held in a stalled socket past the process's deadline, chaos bug
    -- 6). What Stripe decided is in the cache already; a grant now would be a hold nobody releases.
    reason = 'system_unavailable'
  end
end
if reason == '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[10]) then reason = 'velocity_limit' end
  redis.call('ZADD', KEYS[7], now, ARGV[12])
  redis.call('PEXPIRE', KEYS[7], 120000)
end
local granted = 0
if reason == '' then
  local h = redis.call('HMGET', KEYS[1], ${A.debtOnchainCents}, ${A.unsettledCents}, ${A.holdsCents}, ${A.dailyLimitCents})
  local available = tonumber(ARGV[8]) - tonumber(h[1] or '0') - tonumber(h[2] or '0') - tonumber(h[3] or '0')
  local dayLeft = tonumber(h[4] or '0') - tonumber(redis.call('GET', KEYS[6]) or '0')
  local controllable = ARGV[5] == '1'
  granted = amount
  if dayLeft < granted then
    if controllable and dayLeft > 0 then granted = dayLeft else reason = 'daily_limit' end
  end
  if reason == '' and available < granted then
    if controllable and available > 0 then
      granted = available
    elseif ARGV[9] == '1' then
      reason = 'stale_price'
    else
      reason = 'insufficient_credit'
    end
  end
  if reason == '' then
    if granted < amount then reason = 'partial' else reason = 'approved' end
  else
    granted = 0
  end
end
local approved = (reason == 'approved' or reason == 'partial') and ${S.approved} or ${S.declined}
local grantedText = string.format('%.0f', granted)
if granted > 0 then
  redis.call('HINCRBY', KEYS[1], ${A.holdsCents}, grantedText)
  redis.call('HINCRBY', KEYS[3], ARGV[3], grantedText)
  redis.call('ZADD', KEYS[4], ARGV[13], ARGV[3])
  redis.call('INCRBY', KEYS[6], grantedText)
  redis.call('EXPIRE', KEYS[6], 172800)
end
if card then
  local ver = tonumber(redis.call('HGET', KEYS[9], ${T.version}) or '0')
  if tonumber(ARGV[16]) > ver then redis.call('HSET', KEYS[9], ${T.version}, ARGV[16]) end
  redis.call('EXPIRE', KEYS[9], tonumber(ARGV[17]))
end
redis.call('XADD', KEYS[8], '*', ${O.record}, ARGV[15], ${O.approved}, approved, ${O.amountCents}, grantedText, ${O.reason}, reason)
redis.call('SET', KEYS[5], ${S.encode('approved', 'grantedText', 'reason', 'ARGV[12]')}, 'EX', tonumber(ARGV[14]))
return {'ok', approved, grantedText, reason}
`);

/**
 * Records a decision that involves no user (the card is unknown): idempotent by event.
 * KEYS: 1 decision, 2 outbox. ARGV: 1 decisionId, 2 record, 3 ttlS, 4 reason
 */
export const DECIDE_WITHOUT_USER = luaScript(`
local prior = redis.call('GET', KEYS[1])
if prior then return {'dup', prior} end
redis.call('XADD', KEYS[2], '*', ${O.record}, ARGV[2], ${O.approved}, '0', ${O.amountCents}, '0', ${O.reason}, ARGV[4])
redis.call('SET', KEYS[1], ${S.encode(S.declined, "'0'", 'ARGV[4]', 'ARGV[1]')}, 'EX', tonumber(ARGV[3]))
return {'ok', '0', '0', ARGV[4]}
`);

/**
 * Withdraws an approval whose replication was not confirmed (REDIS_WAIT_REPLICAS, engine.ts): the
 * stored answer becomes a decline `replication_unconfirmed` (same decision id, its TTL kept), the hold
 * it granted is released (at most what the authorization still holds) and a lifecycle record with the
 * exact release goes to the outbox, so the ledger writer books the decision and then its release and
 * Postgres ends where Stripe was told. Idempotent: it acts only on the stored answer it is given (an
 * approval); anything else stored — already withdrawn, superseded by the fallback — is left alone.
 * Returns {'released', cents} | {'kept', stored} | {'gone'}.
 * KEYS: 1 account, 2 holds, 3 holdExpiries, 4 decision, 5 daySpend (of the decision's day), 6 outbox
 * ARGV: 1 stored answer expected (approval), 2 authorizationId, 3 lifecycle record
 */
export const RELEASE_UNREPLICATED = luaScript(`
local prior = redis.call('GET', KEYS[4])
if not prior then return {'gone'} end
if prior ~= ARGV[1] then return {'kept', prior} end
local granted, id = string.match(prior, ${S.approvalAmountAndId})
if not granted then return {'kept', prior} end
redis.call('SET', KEYS[4], ${S.encode(S.declined, "'0'", "'replication_unconfirmed'", 'id')}, 'KEEPTTL')
local g = tonumber(granted)
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local d = g
if held < d then d = held end
if d < 0 then d = 0 end
local t = string.format('%.0f', d)
if d > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], ${A.holdsCents}, '-' .. t)
  local left = redis.call('HINCRBY', KEYS[2], ARGV[2], '-' .. t)
  if left <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call('ZREM', KEYS[3], ARGV[2])
  end
else
  d = 0
  t = '0'
end
if g > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('DECRBY', KEYS[5], granted)
end
redis.call('XADD', KEYS[6], '*', ${O.record}, ARGV[3], ${O.holdDeltaCents}, d > 0 and ('-' .. t) or '0', ${O.unsettledDeltaCents}, '0', ${O.capturedDeltaCents}, '0')
return {'released', t}
`);
