/**
 * The Lua scripts of the lifecycle handlers (Stripe's asynchronous Issuing events) and of the adoption
 * of Postgres fallback decisions into the cache (adoption.ts), which the lifecycle handlers run before
 * an event of an authorization with a pending grant. Each runs atomically over keys of one user's
 * shard (see shared/redis/keys.ts), so it works unchanged on a Redis Cluster. Exactness as in
 * hot-path/decision/lua.ts: every number is in cents, bounded far below 2^53, and written back with
 * `%.0f`.
 *
 * Per authorization the script keeps a hash (authState): `ver` (newest event version applied, or
 * decided by the DECIDE script), `lv` (newest version of an authorization event seen here), `t`
 * (a terminal status was seen), `cap` (cents captured through booked transactions), `ref` (cents of
 * refunds credited against those captures), `rvh` (cents of its refunds held for review) and `w` (set
 * once the authorization closed approved: the captured total Stripe listed, or -1 when it listed none).
 * When Redis loses this hash with the account (an empty restart), the account rebuild restores it from
 * Postgres with the holds (shared/redis/account.ts `restoredAuthorizationState`: exact or towards less
 * credit; `lv` is not restored), so the events after the loss see what was captured and refunded.
 * Those names (AUTH_STATE), the account's (A) and the outbox entry's outcome fields (O) are spliced in
 * from shared/policy/redis-fields.ts, the stored answer's format (S) from shared/policy/stored-answer.ts.
 */
import { LUA_FIELDS } from '../policy/redis-fields.ts';
import { STORED_ANSWER_LUA as S } from '../policy/stored-answer.ts';
import { luaScript } from '../redis/script.ts';

const A = LUA_FIELDS.account;
const T = LUA_FIELDS.authState;
const O = LUA_FIELDS.outbox;

/**
 * Applies one lifecycle event to a user's cache, once per event id, and appends its record.
 * Returns {'ok', holdDelta, unsettledDelta, capturedDelta, reviewCents, reviewReason} | {'dup'} |
 * {'missing'} | {'kept'} | {'wrong_user'}.
 * Wrong user: the event's card (ARGV[13]) is not in this user's cards (KEYS[7]), as DECIDE's
 * `unknown_card`: the caller's card → user view is wrong, so nothing is applied or recorded here (the
 * handler re-resolves the owner from Postgres). Checked after 'missing', so a rebuilt account (which
 * holds every card Postgres has for the user) is judged on its cards; '' (an expiry) is not checked.
 * KEYS: 1 account, 2 holds, 3 holdExpiries, 4 authState, 5 appliedMarker, 6 outbox, 7 cards
 * ARGV: 1 kind, 2 authorizationId ('' if none), 3 status, 4 approved, 5 amountCents (≥ 0),
 *       6 eventVersion, 7 holdExpiresAtMs, 8 record, 9 markerTtlS, 10 authStateTtlS,
 *       11 stripeCapturedCents (-1 when Stripe listed no captures), 12 nowMs, 13 cardId ('' if none)
 * Kinds (see handler.ts for how Stripe's types and signs map onto them):
 * - `auth`: the hold becomes what Stripe says is left (amount − captured), but only from an event at
 *   least as new as the newest one applied (version = request count × 1e10 + created), and never again
 *   after a terminal status. A `closed` approved authorization keeps its captured part held until the
 *   captures are booked (the captured total Stripe lists, or the authorized amount when it lists
 *   none), re-armed to expire no earlier than ARGV[7]; every other terminal status releases the hold.
 * - `debit` (a capture, or a refund reversal): adds to unsettled. A capture on an authorization turns
 *   its hold into unsettled debt; on a closed one the hold left is what Stripe's captured total still
 *   lacks (all of it once one capture arrives, when Stripe listed none). A refund reversal (ARGV[3] =
 *   'refund_reversal') makes that much of the authorization's captures refundable again.
 * - `credit` (a refund, or a capture reversal): lowers unsettled by at most what the authorization
 *   captured net of earlier credits, and never below zero. The rest is not credit: it is returned as
 *   review cents with the reason (`unlinked`: no authorization; `beyond_captured`; `settled`: unsettled
 *   is already lower, the capture was recorded on-chain) and booked by the ledger writer to the
 *   review account. A later capture on the same authorization credits what it makes refundable of
 *   the held part (negative review cents, reason `captured_later`), so order of arrival does not matter.
 * - `expire`: releases the hold, except a closed authorization's captured part before its expiry
 *   (then {'kept'}, nothing recorded, so a later expiry still applies).
 */
export const LIFECYCLE = luaScript(`
if redis.call('EXISTS', KEYS[5]) == 1 then return {'dup'} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[13] ~= '' and redis.call('HEXISTS', KEYS[7], ARGV[13]) == 0 then return {'wrong_user'} end
local kind = ARGV[1]
local auth = ARGV[2]
local amount = tonumber(ARGV[5])
local holdBefore = 0
if auth ~= '' then holdBefore = tonumber(redis.call('HGET', KEYS[2], auth) or '0') end
local target = holdBefore
local unsettled = 0
local captured = 0
local review = 0
local why = ''
local terminal = auth ~= '' and redis.call('HGET', KEYS[4], ${T.terminal}) == '1'
local cap = 0
local waiting = false
if auth ~= '' then
  cap = tonumber(redis.call('HGET', KEYS[4], ${T.capturedCents}) or '0')
  waiting = redis.call('HEXISTS', KEYS[4], ${T.closedCapturedCents}) == 1
end
local rearm = false
if kind == 'auth' then
  local ver = tonumber(redis.call('HGET', KEYS[4], ${T.version}) or '0')
  local evVer = tonumber(ARGV[6])
  -- The newest version Stripe described (not the decisions'): a fallback grant for a request this old
  -- is already in the hold set here (ADOPT_FALLBACK).
  if evVer > tonumber(redis.call('HGET', KEYS[4], ${T.stripeVersion}) or '0') then redis.call('HSET', KEYS[4], ${T.stripeVersion}, ARGV[6]) end
  if ARGV[3] ~= 'pending' then
    if ARGV[3] == 'closed' and ARGV[4] == '1' and not terminal then
      local listed = tonumber(ARGV[11])
      local expect = listed
      if listed < 0 then
        if cap > 0 then expect = cap else expect = amount end
        if cap > 0 then listed = cap end
      end
      redis.call('HSET', KEYS[4], ${T.closedCapturedCents}, string.format('%.0f', listed))
      target = expect - cap
      if target < 0 then target = 0 end
      rearm = true
    elseif not waiting then
      target = 0
    end
    redis.call('HSET', KEYS[4], ${T.terminal}, '1')
  elseif not terminal and evVer >= ver then
    if ARGV[4] == '1' then
      local left = amount - cap
      if left < 0 then left = 0 end
      target = left
    else
      target = 0
    end
    redis.call('HSET', KEYS[4], ${T.version}, ARGV[6])
  end
elseif kind == 'expire' then
  if waiting and holdBefore > 0 then
    local due = redis.call('ZSCORE', KEYS[3], auth)
    if due and tonumber(due) > tonumber(ARGV[12]) then return {'kept'} end
  end
  target = 0
  redis.call('HSET', KEYS[4], ${T.terminal}, '1')
elseif kind == 'debit' then
  if auth ~= '' then
    if ARGV[3] == 'refund_reversal' then
      local ref = tonumber(redis.call('HGET', KEYS[4], ${T.refundedCents}) or '0')
      local back = amount
      if back > ref then back = ref end
      if back > 0 then redis.call('HINCRBY', KEYS[4], ${T.refundedCents}, string.format('%.0f', -back)) end
    else
      captured = amount
      cap = cap + amount
      redis.call('HINCRBY', KEYS[4], ${T.capturedCents}, string.format('%.0f', amount))
      -- A refund that arrived before this capture was held for review as beyond what was captured:
      -- what this capture makes refundable is credited now, so the end state does not depend on the
      -- order the events arrived in.
      local early = tonumber(redis.call('HGET', KEYS[4], ${T.reviewHeldCents}) or '0')
      if early > 0 then
        local back = cap - tonumber(redis.call('HGET', KEYS[4], ${T.refundedCents}) or '0')
        if back > early then back = early end
        local unsNow = tonumber(redis.call('HGET', KEYS[1], ${A.unsettledCents}) or '0') + amount
        if back > unsNow then back = unsNow end
        if back > 0 then
          local backText = string.format('%.0f', back)
          redis.call('HINCRBY', KEYS[4], ${T.refundedCents}, backText)
          redis.call('HINCRBY', KEYS[4], ${T.reviewHeldCents}, '-' .. backText)
          review = -back
          why = 'captured_later'
        end
      end
      if waiting then
        local w = tonumber(redis.call('HGET', KEYS[4], ${T.closedCapturedCents}))
        if w < 0 then target = 0 else target = w - cap end
        if target > holdBefore then target = holdBefore end
      else
        target = holdBefore - amount
      end
      if target < 0 then target = 0 end
    end
  end
  unsettled = amount + review
elseif kind == 'credit' then
  local credit = amount
  if auth == '' then
    credit = 0
    why = 'unlinked'
  else
    local refundable = cap - tonumber(redis.call('HGET', KEYS[4], ${T.refundedCents}) or '0')
    if refundable < 0 then refundable = 0 end
    if credit > refundable then
      credit = refundable
      why = 'beyond_captured'
    end
  end
  local uns = tonumber(redis.call('HGET', KEYS[1], ${A.unsettledCents}) or '0')
  if uns < 0 then uns = 0 end
  if credit > uns then
    credit = uns
    if why == '' then why = 'settled' end
  end
  if credit > 0 then redis.call('HINCRBY', KEYS[4], ${T.refundedCents}, string.format('%.0f', credit)) end
  unsettled = -credit
  review = amount - credit
  if auth ~= '' and review > 0 then redis.call('HINCRBY', KEYS[4], ${T.reviewHeldCents}, string.format('%.0f', review)) end
end
local holdDelta = target - holdBefore
if auth ~= '' then redis.call('EXPIRE', KEYS[4], tonumber(ARGV[10])) end
if holdDelta ~= 0 then
  redis.call('HINCRBY', KEYS[1], ${A.holdsCents}, string.format('%.0f', holdDelta))
  if target == 0 then
    redis.call('HDEL', KEYS[2], auth)
    redis.call('ZREM', KEYS[3], auth)
  else
    redis.call('HSET', KEYS[2], auth, string.format('%.0f', target))
    if holdBefore == 0 then redis.call('ZADD', KEYS[3], ARGV[7], auth) end
  end
end
if rearm and target > 0 then redis.call('ZADD', KEYS[3], 'GT', ARGV[7], auth) end
if unsettled ~= 0 then redis.call('HINCRBY', KEYS[1], ${A.unsettledCents}, string.format('%.0f', unsettled)) end
redis.call('SET', KEYS[5], '1', 'EX', tonumber(ARGV[9]))
local hd, ud, cd = string.format('%.0f', holdDelta), string.format('%.0f', unsettled), string.format('%.0f', captured)
local rv = string.format('%.0f', review)
redis.call('XADD', KEYS[6], '*', ${O.record}, ARGV[8], ${O.holdDeltaCents}, hd, ${O.unsettledDeltaCents}, ud, ${O.capturedDeltaCents}, cd, ${O.reviewCents}, rv, ${O.reviewReason}, why)
return {'ok', hd, ud, cd, rv, why}
`);

/**
 * Records a lifecycle event that moves no cached money (unknown card, or a currency we do not book):
 * idempotent by event.
 * KEYS: 1 appliedMarker, 2 outbox. ARGV: 1 record, 2 ttlS
 */
export const LIFECYCLE_WITHOUT_USER = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return {'dup'} end
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[2]))
redis.call('XADD', KEYS[2], '*', ${O.record}, ARGV[1], ${O.holdDeltaCents}, '0', ${O.unsettledDeltaCents}, '0', ${O.capturedDeltaCents}, '0')
return {'ok', '0', '0', '0'}
`);

/**
 * Mirrors a decision the Postgres fallback made into the cache: its idempotency key always (so a
 * replay returns the same answer), and its hold when the account is cached (a missing account is
 * rebuilt from Postgres, which already has the hold). Nothing goes to the outbox for a hold: Postgres
 * has it.
 *
 * Late Redis work: the same request's Redis attempt (same decision id) may have run after the process
 * gave up on it and answered from the fallback. Its hold then is not what Stripe was told. The stored
 * answer says so (same decision id, other answer): that attempt's grant is replaced by the fallback's
 * here ('superseded'). Postgres followed the late grant meanwhile (the ledger writer books the
 * difference when it finds the fallback's decision under the same id, docs/chaos.md bug 5), since every
 * lifecycle movement until now was computed against it; so the replacement goes to Postgres too, as one
 * lifecycle record (ARGV[9], hd = fallback's grant − late grant).
 *
 * Stripe's events first ('settled'): Stripe's `created`/`updated` for this request (authorization
 * version ≥ the grant's, `lv` in authState) or a terminal status may have been applied to the cache
 * before the adoption. They set the hold to what Stripe says is left, so the cache already has its
 * final word on this grant and the hold is not added; but they were computed against a cache that
 * lacked the grant, and Postgres booked their deltas on top of the fallback's hold: one lifecycle
 * record (`credana.fallback_settled`, hd = −grant) takes the grant back out of Postgres. Superseded
 * and settled, nothing moves: the events were computed against the late grant, which Postgres
 * followed. Captures alone do not settle: the hold is added (Postgres has it too) and Stripe's
 * authorization event, which always follows, sets both to what is left.
 * Returns 'adopted' | 'known' | 'key-only' | 'superseded' | 'settled'.
 * KEYS: 1 account, 2 holds, 3 holdExpiries, 4 decision, 5 daySpend, 6 authState, 7 outbox
 * ARGV: 1 stored answer, 2 ttlS, 3 authorizationId, 4 grantedCents, 5 holdExpiresAtMs, 6 decisionId,
 *       7 the authorization's version after the grant's request (request count × 1e10; '' unknown: only
 *       a terminal status settles), 8 the settled correction's record (JSON), 9 the superseding
 *       correction's record (JSON)
 */
export const ADOPT_FALLBACK = luaScript(`
local prior = redis.call('GET', KEYS[4])
local delta = tonumber(ARGV[4])
local result = 'adopted'
if prior then
  if prior == ARGV[1] then return 'known' end
  local priorAmount, priorId = string.match(prior, ${S.anyAmountAndId})
  if priorId ~= ARGV[6] then return 'known' end
  delta = delta - tonumber(priorAmount)
  result = 'superseded'
  redis.call('SET', KEYS[4], ARGV[1], 'EX', tonumber(ARGV[2]))
elseif not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) then
  return 'known'
end
local superseding = function(hold)
  redis.call('XADD', KEYS[7], '*', ${O.record}, ARGV[9], ${O.holdDeltaCents}, string.format('%.0f', hold), ${O.unsettledDeltaCents}, '0', ${O.capturedDeltaCents}, '0', ${O.reviewCents}, '0', ${O.reviewReason}, '')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- The account is rebuilt from Postgres, which must then hold the fallback's grant, not the late one.
  if result == 'superseded' and delta ~= 0 then superseding(delta) end
  return 'key-only'
end
local settled = redis.call('HGET', KEYS[6], ${T.terminal}) == '1'
if not settled and ARGV[7] ~= '' then
  settled = tonumber(redis.call('HGET', KEYS[6], ${T.stripeVersion}) or '0') >= tonumber(ARGV[7])
end
if delta ~= 0 then
  local d = string.format('%.0f', delta)
  if settled then
    if result == 'adopted' then
      redis.call('XADD', KEYS[7], '*', ${O.record}, ARGV[8], ${O.holdDeltaCents}, string.format('%.0f', -delta), ${O.unsettledDeltaCents}, '0', ${O.capturedDeltaCents}, '0', ${O.reviewCents}, '0', ${O.reviewReason}, '')
    end
  else
    -- A capture computed against the late grant may have left less held than the replacement takes
    -- out: the hold stops at zero, in Redis and in Postgres alike.
    local hold = delta
    local before = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
    if before + hold < 0 then hold = -before end
    if result == 'superseded' and hold ~= 0 then superseding(hold) end
    local h = string.format('%.0f', hold)
    redis.call('HINCRBY', KEYS[1], ${A.holdsCents}, h)
    local held = redis.call('HINCRBY', KEYS[2], ARGV[3], h)
    if held <= 0 then
      redis.call('HDEL', KEYS[2], ARGV[3])
      redis.call('ZREM', KEYS[3], ARGV[3])
    else
      redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
    end
  end
  redis.call('INCRBY', KEYS[5], d)
  redis.call('EXPIRE', KEYS[5], 172800)
end
if settled then return 'settled' end
return result
`);
