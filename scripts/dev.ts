/**
 * `npm run dev`: brings the local system up on its defaults — checks Postgres and Redis answer,
 * migrates the financial database, seeds demo users with cards and collateral, starts the hot path
 * (and the ledger writer when present), then prints a summary and writes it to .dev/stack.json.
 * Ctrl-C stops everything. A second run reuses what is there (seeding is idempotent).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { serve } from '@hono/node-server';
import { createHotPath } from '../hot-path/server.ts';
import { configFromProcess } from '../shared/config.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { seedDemo } from './seed-demo.ts';

const config = configFromProcess();

async function answers(what: string, check: () => Promise<unknown>, hint: string): Promise<void> {
  try {
    await check();
  } catch {
    process.stderr.write(`dev: ${what} does not answer. ${hint}\n`);
    process.exit(1);
  }
}

const { default: postgres } = await import('postgres');
await answers(
  `PostgreSQL at ${new URL(config.DATABASE_URL).host}`,
  async () => {
    const admin = postgres(config.DATABASE_URL.replace(/\/[^/]*$/, '/postgres'), {
      max: 1,
      connect_timeout: 3,
      onnotice: () => {},
    });
    try {
      await admin`select 1`;
    } finally {
      await admin.end({ timeout: 1 });
    }
  },
  'Install and start it (Debian: apt-get install postgresql && pg_ctlcluster 15 main start) or set DATABASE_URL.',
);
const { Redis } = await import('ioredis');
await answers(
  `Redis at ${new URL(config.REDIS_URL).host}`,
  async () => {
    const probe = new Redis(config.REDIS_URL, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on('error', () => {});
    try {
      await probe.connect();
      await probe.ping();
    } finally {
      probe.disconnect();
    }
  },
  'Install and start it (Debian: apt-get install redis-server && redis-server --daemonize yes) or set REDIS_URL.',
);

await ensureDatabase(config.DATABASE_URL);
await migrateDatabase(config.DATABASE_URL);
const hotPath = await createHotPath(config);
const demo = await seedDemo(hotPath.database.sql, hotPath.redis, config);
await hotPath.market.reload();
const server = serve({
  fetch: hotPath.app.fetch,
  port: config.HOT_PATH_PORT,
  hostname: config.HOT_PATH_HOST,
});
const base = `http://${config.HOT_PATH_HOST}:${config.HOT_PATH_PORT}`;
const summary = {
  hotPath: {
    baseUrl: base,
    authorizationUrl: `${base}/stripe/authorizations`,
    eventsUrl: `${base}/stripe/events`,
    metricsUrl: `${base}/metrics`,
  },
  stripe: { webhookSecret: config.STRIPE_WEBHOOK_SECRETS[0], apiVersion: config.STRIPE_API_VERSION },
  users: demo.map((u) => ({ userId: u.userId, cardId: u.cardId, availableCents: Number(u.availableCents) })),
};
mkdirSync('.dev', { recursive: true });
writeFileSync('.dev/stack.json', `${JSON.stringify(summary, null, 2)}\n`);
process.stdout.write(
  [
    'Credana dev stack is up.',
    `  hot path        ${base}  (POST /stripe/authorizations, POST /stripe/events, GET /metrics)`,
    `  webhook secret  ${config.STRIPE_WEBHOOK_SECRETS[0]}  (local development only)`,
    ...demo.map(
      (u) => `  demo user       ${u.userId}  card ${u.cardId}  available ${u.availableCents} cents`,
    ),
    '  summary         .dev/stack.json',
    'Ctrl-C stops everything.',
    '',
  ].join('\n'),
);

function stop(): void {
  server.close();
  hotPath.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
