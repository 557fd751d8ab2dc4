/**
 * The obvious alternative, for the benchmark: the same decisions made from Postgres alone — the
 * hot path's own row-locked check-and-hold (`decideFromPostgres`) behind the same signature check and
 * validation, with no Redis in the decision.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { newDecisionId } from '../../hot-path/decision/engine.ts';
import { decideFromPostgres } from '../../hot-path/decision/postgres-fallback.ts';
import { verifyStripeSignature } from '../../hot-path/stripe/signature.ts';
import { configFromProcess } from '../../shared/config.ts';
import { createDatabase } from '../../shared/db/client.ts';
import { createServiceRedis } from '../../shared/redis/client.ts';
import { createMarket } from '../../shared/redis/market.ts';
import { authorizationRequestEvent } from '../../shared/stripe/events.ts';

const config = configFromProcess();
const database = createDatabase({
  url: config.DATABASE_URL,
  poolMax: config.DATABASE_POOL_MAX,
  applicationName: 'bench-postgres-only',
});
// Prices come from memory exactly as in the hot path; only the decision itself runs in Postgres.
const redis = createServiceRedis(config);
const market = await createMarket(
  redis,
  createServiceRedis(config, { shardedSubscriber: true }),
  config.REDIS_KEY_PREFIX,
);
const app = new Hono();
app.post('/stripe/authorizations', async (c) => {
  const startedAtMs = Date.now();
  const raw = await c.req.text();
  const check = verifyStripeSignature(
    raw,
    c.req.header('stripe-signature'),
    config.STRIPE_WEBHOOK_SECRETS,
    config.STRIPE_SIGNATURE_TOLERANCE_S,
  );
  if (!check.ok) return c.json({ error: check.problem }, 400);
  const event = authorizationRequestEvent.parse(JSON.parse(raw));
  c.header('Stripe-Version', config.STRIPE_API_VERSION);
  try {
    const { decision } = await decideFromPostgres(
      // Nothing adopts this server's decisions into Redis, so the per-outage fallback cap is lifted:
      // the baseline measures the row-locked check-and-hold, not a cap that would decline after $500.
      {
        sql: database.sql,
        market,
        settings: { ...config, FALLBACK_GRANT_CENTS_MAX: 10n ** 15n },
        now: Date.now,
        holder: 'bench-postgres-only',
      },
      event,
      raw,
      newDecisionId(startedAtMs),
      startedAtMs,
      startedAtMs + config.DECISION_BUDGET_MS,
    );
    return c.json({
      approved: decision.approved,
      metadata: { decision_id: decision.decisionId, reason: decision.reason },
    });
  } catch {
    return c.json({ approved: false, metadata: { reason: 'system_unavailable' } });
  }
});
serve({ fetch: app.fetch, port: config.HOT_PATH_PORT, hostname: config.HOT_PATH_HOST }, (info) => {
  process.stdout.write(`postgres-only ready on ${info.port}\n`);
});
