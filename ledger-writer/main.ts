/** `npm run start:ledger-writer`: drains the outbox streams into Postgres as its own process. */
import { hostname } from 'node:os';
import { serve } from '@hono/node-server';
import { Receiver } from '@upstash/qstash';
import { configFromProcess, warnOfPublicSecrets } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { guardServiceRole } from '../shared/db/service-role.ts';
import { startMerchantNameSealing } from '../shared/hsm/merchant-names.ts';
import { createLogger, createServiceRegistry } from '../shared/observability/index.ts';
import { createDependencyProbe, ledgerWriterReadiness } from '../shared/observability/readiness.ts';
import { createServiceRedis } from '../shared/redis/client.ts';
import { durabilityGauge, enforceRedisDurability } from '../shared/redis/durability.ts';
import { createLedgerWriterApp } from './app.ts';
import { limits } from './limits.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import { createQStashReceiverApp } from './qstash-receiver.ts';
import { startSealQueue } from './seal-queue.ts';
import { createLedgerWriter } from './writer.ts';

const config = configFromProcess();
const logger = createLogger(config.LOG_LEVEL, 'ledger-writer');
warnOfPublicSecrets(config, logger);
// The outbox streams are the only copy of approved holds until this process commits them: in
// production, refuse a Redis that would lose or evict them (shared/redis/durability.ts).
const redisDurable = await enforceRedisDurability(config, logger, 'ledger-writer-durability-check');
const database = createDatabase({
  url: config.DATABASE_URL,
  // One connection per lane (batches written concurrently, split by user); one spare.
  poolMax: Math.min(config.DATABASE_POOL_MAX, limits.applyLanes + 1),
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'ledger-writer',
});
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: database.sql, nodeEnv: config.NODE_ENV, service: 'ledger-writer' });
// Merchant names are sealed here (docs/operations.md "Encryption at rest"). The money never waits on
// the HSM: without a data key right now (token or database not answering), names wait unsealed and are
// sealed when it answers. In production, what waiting cannot fix refuses to start (exit 78).
const started = await startMerchantNameSealing(config, database.sql, (kind, error) =>
  logger.warn({ kind, reason: (error as Error).message }, 'merchant names: cannot seal or open now'),
);
if (!started.ok) {
  process.stderr.write(`ledger-writer: ${started.line}\n`);
  process.exit(78);
}
if (started.warning !== null) logger.warn(started.warning);
const sealing = started.sealing;
const merchantNames = sealing?.names ?? null;
const redis = createServiceRedis(config, { connectionName: 'ledger-writer' });
const metrics = createLedgerWriterMetrics(createServiceRegistry('ledger-writer'));
durabilityGauge(metrics.registry, redisDurable);
const writer = createLedgerWriter({
  redis,
  sql: database.sql,
  prefix: config.REDIS_KEY_PREFIX,
  consumer: `${hostname()}-${process.pid}`,
  batchMax: config.LEDGER_BATCH_MAX,
  batchWaitMs: config.LEDGER_BATCH_WAIT_MS,
  leaseMs: config.LEDGER_SHARD_LEASE_MS,
  metrics,
  logger,
  apply: { holdExpiry: config, merchantNames },
});
const sealQueue =
  merchantNames === null
    ? null
    : startSealQueue({
        sql: database.sql,
        names: merchantNames,
        onError: (error) =>
          logger.warn({ reason: (error as Error).message }, 'merchant names: sealing the queue failed'),
        onSealed: (count) => logger.info({ count }, 'merchant names sealed from the queue'),
        onWaiting: (count) => metrics.merchantNamesUnsealed.set(count),
      });
// QUEUE_DRIVER=redis: consume the outbox streams. QUEUE_DRIVER=qstash: the hot path's relay publishes
// them through QStash, and this process applies what QStash delivers to POST /qstash.
const readiness = ledgerWriterReadiness(
  createDependencyProbe({ redis, sql: database.sql, registry: metrics.registry }),
);
// QUEUE_DRIVER=redis: LEDGER_WRITER_PORT serves only /metrics, /healthz and /readyz (internal).
// QUEUE_DRIVER=qstash: it faces QStash, so /metrics there needs METRICS_TOKEN, and an internal
// listener on LEDGER_WRITER_METRICS_PORT serves them openly.
const qstash = config.QUEUE_DRIVER === 'qstash';
const app = createLedgerWriterApp({
  writer,
  metrics,
  readiness,
  logger,
  access: qstash ? { token: config.METRICS_TOKEN } : 'open',
});
const internalServer = qstash
  ? await new Promise<ReturnType<typeof serve>>((resolve) => {
      const listener = serve(
        {
          fetch: createLedgerWriterApp({ writer, metrics, readiness, logger, access: 'open' }).fetch,
          port: config.LEDGER_WRITER_METRICS_PORT,
          hostname: config.METRICS_HOST,
        },
        (info) => {
          logger.info({ port: info.port }, 'ledger writer metrics listening');
          process.stdout.write(`ledger-writer metrics on http://${config.METRICS_HOST}:${info.port}\n`);
          resolve(listener);
        },
      );
    })
  : null;
if (qstash) {
  app.route(
    '/',
    createQStashReceiverApp({
      receiver: new Receiver({
        currentSigningKey: config.QSTASH_CURRENT_SIGNING_KEY ?? '',
        nextSigningKey: config.QSTASH_NEXT_SIGNING_KEY ?? '',
      }),
      sql: database.sql,
      redis,
      prefix: config.REDIS_KEY_PREFIX,
      publicUrl: config.LEDGER_WRITER_PUBLIC_URL,
      apply: { holdExpiry: config, merchantNames },
    }),
  );
} else {
  await writer.start();
}
const server = serve(
  {
    fetch: app.fetch,
    port: config.LEDGER_WRITER_PORT,
    hostname: config.HOT_PATH_HOST,
  },
  (info) =>
    logger.info({ port: info.port }, qstash ? 'ledger writer listening' : 'ledger writer metrics listening'),
);
// A line other processes (tests, the dev stack) wait for.
process.stdout.write('ledger-writer ready\n');

let shuttingDown = false;
function shutdown(): void {
  if (shuttingDown) return;
  shuttingDown = true;
  // Finish the batch in hand (commit + ack), then close; unfinished work stays pending in Redis.
  writer
    .stop()
    .then(async () => {
      await sealQueue?.stop();
      sealing?.close();
      server.close();
      internalServer?.close();
      redis.disconnect();
      await database.close();
      process.exit(0);
    })
    .catch(() => process.exit(1));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
