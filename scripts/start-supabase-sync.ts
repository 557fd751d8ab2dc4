/**
 * `npm run start:supabase-sync`: the Supabase workers as one process — the bridge (sign-ups and card
 * controls → financial database → Redis) and the projection sync (financial database → Supabase).
 * Prometheus metrics on SUPABASE_SYNC_METRICS_PORT (default 9466; 0 picks a free port) at /metrics.
 * Prints "supabase-sync ready" once both run. SIGTERM / SIGINT stop it cleanly; a SIGKILL is safe too
 * (the outbox and the cursor are transactional, so the next start resumes).
 */
import { createServer } from 'node:http';
import pino from 'pino';
import postgres from 'postgres';
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { createRedis } from '../shared/redis/client.ts';
import {
  assertSyncLimits,
  createProjectionSync,
  createSyncMetrics,
  createUserBridge,
  defaultSyncLimits,
} from '../supabase/sync/index.ts';

const config = configFromProcess();
const metricsPort = config.SUPABASE_SYNC_METRICS_PORT;
if (
  new URL(config.SUPABASE_DB_URL).pathname === new URL(config.DATABASE_URL).pathname &&
  new URL(config.SUPABASE_DB_URL).host === new URL(config.DATABASE_URL).host
) {
  process.stderr.write('start-supabase-sync: SUPABASE_DB_URL must not be the financial database\n');
  process.exit(78);
}
const limits = defaultSyncLimits;
assertSyncLimits(limits);

const logger = pino({ level: config.LOG_LEVEL, base: { service: 'supabase-sync' } });
const financial = createDatabase({
  url: config.DATABASE_URL,
  poolMax: 4,
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'supabase-sync',
});
// A direct (or session-pooler) connection: LISTEN needs a session, not a transaction pooler.
const supabase = postgres(config.SUPABASE_DB_URL, {
  max: 4,
  connect_timeout: 5,
  onnotice: () => {},
  connection: { application_name: 'credana-supabase-sync', TimeZone: 'UTC', statement_timeout: 30_000 },
});
const redis = createRedis({ url: config.REDIS_URL, connectionName: 'supabase-sync' });
const metrics = createSyncMetrics();

const bridge = createUserBridge({
  supabase,
  financial: financial.sql,
  redis,
  redisPrefix: config.REDIS_KEY_PREFIX,
  defaults: {
    creditLimitCents: config.CREDIT_LIMIT_CENTS_DEFAULT,
    dailyLimitCents: config.DAILY_LIMIT_CENTS_DEFAULT,
    dailyLimitCeilingCents: config.DAILY_LIMIT_CEILING_CENTS_DEFAULT,
    dailyLimitIncreaseCooldownS: config.DAILY_LIMIT_INCREASE_COOLDOWN_S,
  },
  limits,
  metrics,
  logger,
});
const projection = createProjectionSync({
  supabase,
  financial: financial.sql,
  limits,
  metrics,
  logger,
  healthWarningBps: config.HEALTH_FACTOR_WARNING_BPS,
});

const server = createServer((req, res) => {
  if (req.url === '/metrics') {
    metrics.registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      () => res.writeHead(500).end(),
    );
  } else if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  } else {
    res.writeHead(404).end();
  }
});
server.listen(metricsPort, '127.0.0.1');

await bridge.start();
projection.start();
logger.info({ metricsPort }, 'supabase-sync running');
process.stdout.write('supabase-sync ready\n');

let stopping = false;
async function shutdown(): Promise<void> {
  if (stopping) return;
  stopping = true;
  server.close();
  await projection.stop();
  await bridge.stop();
  redis.disconnect();
  await supabase.end({ timeout: 5 });
  await financial.close();
}
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    shutdown().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
