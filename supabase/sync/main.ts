/**
 * `npm run start:supabase-sync`: the Supabase workers as one process — the bridge (sign-ups and card
 * controls → financial database → Redis) and the projection sync (financial database → Supabase).
 * Internal listener on METRICS_HOST:SUPABASE_SYNC_METRICS_PORT (default 9466; 0 picks a free port,
 * announced on stdout as `supabase-sync metrics on http://…`): GET /metrics, /healthz, and /readyz —
 * ready while the financial database, the Supabase database and Redis answer.
 * Prints "supabase-sync ready" once both run. SIGTERM / SIGINT stop it cleanly; a SIGKILL is safe too
 * (the outbox and the cursor are transactional, so the next start resumes).
 */
import postgres from 'postgres';
import { configFromProcess } from '../../shared/config.ts';
import { createDatabase } from '../../shared/db/client.ts';
import { guardServiceRole } from '../../shared/db/service-role.ts';
import { merchantNamesFromConfig } from '../../shared/hsm/merchant-names.ts';
import {
  createInternalApp,
  createLogger,
  createProbes,
  createServiceRegistry,
  serveInternal,
} from '../../shared/observability/index.ts';
import { createServiceRedis } from '../../shared/redis/client.ts';
import {
  assertSyncLimits,
  createProjectionSync,
  createSyncMetrics,
  createUserBridge,
  defaultSyncLimits,
} from './index.ts';

const config = configFromProcess();
const metricsPort = config.SUPABASE_SYNC_METRICS_PORT;
if (
  new URL(config.SUPABASE_DB_URL).pathname === new URL(config.DATABASE_URL).pathname &&
  new URL(config.SUPABASE_DB_URL).host === new URL(config.DATABASE_URL).host
) {
  process.stderr.write('supabase-sync: SUPABASE_DB_URL must not be the financial database\n');
  process.exit(78);
}
const limits = defaultSyncLimits;
assertSyncLimits(limits);

const logger = createLogger(config.LOG_LEVEL, 'supabase-sync');
const financial = createDatabase({
  url: config.DATABASE_URL,
  poolMax: 4,
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'supabase-sync',
});
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: financial.sql, nodeEnv: config.NODE_ENV, service: 'supabase-sync' });
// A direct (or session-pooler) connection: LISTEN needs a session, not a transaction pooler.
const supabase = postgres(config.SUPABASE_DB_URL, {
  max: 4,
  connect_timeout: 5,
  onnotice: () => {},
  connection: { application_name: 'credana-supabase-sync', TimeZone: 'UTC', statement_timeout: 30_000 },
});
const redis = createServiceRedis(config, { connectionName: 'supabase-sync' });
const metrics = createSyncMetrics(createServiceRegistry('supabase-sync'));

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
// Opens the sealed merchant names the projection shows the user (docs/operations.md "Encryption at
// rest"); the token is opened on first use. Without one, or while it does not answer, the activity
// shows no merchant name and the periodic sweep writes it once it opens — balances never wait on it.
const sealing = merchantNamesFromConfig(config, financial.sql, (kind, error) =>
  logger.warn({ kind, reason: (error as Error).message }, 'merchant names: cannot open now'),
);
if (sealing === null) logger.warn('merchant names are not projected: no PKCS11 token configured');
const projection = createProjectionSync({
  supabase,
  financial: financial.sql,
  limits,
  metrics,
  logger,
  healthWarningBps: config.HEALTH_FACTOR_WARNING_BPS,
  merchantNames: sealing?.names ?? null,
});

const probe = createProbes(metrics.registry, {
  postgres: () => financial.sql`select 1`.execute(),
  supabase: () => supabase`select 1`.execute(),
  redis: () => redis.ping(),
});
const internal = await serveInternal({
  app: createInternalApp({
    logger,
    registry: metrics.registry,
    metricsEnabled: config.METRICS_ENABLED,
    readiness: async () => {
      const status = await probe();
      return { ready: status.postgres && status.supabase && status.redis, ...status };
    },
  }),
  service: 'supabase-sync',
  host: config.METRICS_HOST,
  port: metricsPort,
  portVariable: 'SUPABASE_SYNC_METRICS_PORT',
});

await bridge.start();
projection.start();
logger.info({ metricsPort }, 'supabase-sync running');
process.stdout.write('supabase-sync ready\n');

let stopping = false;
async function shutdown(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await internal.close();
  await projection.stop();
  await bridge.stop();
  sealing?.close();
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
