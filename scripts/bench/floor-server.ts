/**
 * The architecture floor, for the benchmark: the least any design of the hot path's shape can do per
 * decision. The same body read, Stripe signature check and event validation as the hot path (the very
 * functions it uses), then one EVALSHA of a minimal script that checks and reserves a hold in one hash
 * and appends the event to one stream — a single Redis round trip — and the same answer shape.
 *
 * What it leaves out, and the hot path does: the card → user lookup, the exact borrow power from
 * prices and collateral, card controls, limits, velocity, idempotency by event, hold expiry, the full
 * decision record, metrics and logs. The hot path's ratio to this floor is what all of that costs.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { newDecisionId } from '../../hot-path/decision/engine.ts';
import { verifyStripeSignature } from '../../hot-path/stripe/signature.ts';
import { configFromProcess } from '../../shared/config.ts';
import { readRawBody, requestHeader } from '../../shared/http/raw-body.ts';
import { createServiceRedis } from '../../shared/redis/client.ts';
import { shardOf } from '../../shared/redis/keys.ts';
import { luaScript, runScript } from '../../shared/redis/script.ts';
import { authorizationRequestEvent } from '../../shared/stripe/events.ts';

/** Every floor key starts so (after REDIS_KEY_PREFIX); run.ts deletes them after the floor's phase. */
const FLOOR_NAMESPACE = 'floor:';

/**
 * KEYS: 1 the card's hold hash, 2 its shard's stream (one hash slot). ARGV: 1 amount, 2 cap, 3 record.
 * Returns 1 when the hold was reserved, 0 when it would pass the cap.
 */
const RESERVE_AND_APPEND = luaScript(`
local amount = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[1], 'hold') or '0')
local ok = held + amount <= tonumber(ARGV[2])
if ok then redis.call('HINCRBY', KEYS[1], 'hold', ARGV[1]) end
redis.call('XADD', KEYS[2], '*', 'r', ARGV[3], 'ok', ok and '1' or '0')
if ok then return 1 end
return 0
`);

/** A cap no bench run reaches: the floor checks it, it never declines for it. */
const CAP_CENTS = '1000000000000';

const config = configFromProcess();
const prefix = `${config.REDIS_KEY_PREFIX}${FLOOR_NAMESPACE}`;
// The hot path's connection settings (server.ts): fail fast, auto-pipelined.
const redis = createServiceRedis(config, {
  commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS,
  offlineQueue: false,
  connectionName: 'bench-floor',
  autoPipelining: true,
});
const app = new Hono();
app.post('/stripe/authorizations', async (c) => {
  const startedAtMs = Date.now();
  const body = await readRawBody(c, config.WEBHOOK_BODY_LIMIT_BYTES);
  if (!body.ok) return c.json({ error: 'body_too_large' }, 413);
  const check = verifyStripeSignature(
    body.text,
    requestHeader(c, 'stripe-signature'),
    config.STRIPE_WEBHOOK_SECRETS,
    config.STRIPE_SIGNATURE_TOLERANCE_S,
  );
  if (!check.ok) return c.json({ error: check.problem }, 400);
  c.header('Stripe-Version', config.STRIPE_API_VERSION);
  let json: unknown;
  try {
    json = JSON.parse(body.text);
  } catch {
    json = undefined;
  }
  const parsed = authorizationRequestEvent.safeParse(json);
  if (!parsed.success) return c.json({ approved: false, metadata: { reason: 'invalid_request' } });
  const auth = parsed.data.data.object;
  const decisionId = newDecisionId(startedAtMs);
  const tag = `{s:${shardOf(auth.card.id).toString().padStart(2, '0')}}`;
  try {
    const reserved = await runScript<number>(
      redis,
      RESERVE_AND_APPEND,
      [`${prefix}${tag}:c:${auth.card.id}`, `${prefix}${tag}:outbox`],
      [String(auth.pending_request.amount), CAP_CENTS, `${decisionId}|${body.text}`],
    );
    return c.json({
      approved: reserved === 1,
      metadata: { decision_id: decisionId, reason: reserved === 1 ? 'approved' : 'insufficient_credit' },
    });
  } catch {
    return c.json({ approved: false, metadata: { reason: 'system_unavailable' } });
  }
});
// Exits on SIGTERM (run.ts's stop) through process.exit, so `--cpu-prof` writes its profile.
process.on('SIGTERM', () => process.exit(0));
serve({ fetch: app.fetch, port: config.HOT_PATH_PORT, hostname: config.HOT_PATH_HOST }, (info) => {
  process.stdout.write(`floor ready on ${info.port}\n`);
});
