/** `npm run start:hot-path`: the authorization server as its own process. */
import { serve } from '@hono/node-server';
import { configFromProcess, warnOfPublicSecrets } from '../shared/config.ts';
import { guardServiceRole } from '../shared/db/service-role.ts';
import { createLogger } from '../shared/observability/index.ts';
import { durabilityGauge, enforceRedisDurability } from '../shared/redis/durability.ts';
import { createHotPath } from './server.ts';

const config = configFromProcess();
const logger = createLogger(config.LOG_LEVEL, 'hot-path');
// The config accepts a public secret only in explicit development on loopback; say so, loudly.
warnOfPublicSecrets(config, logger);
// Holds and outbox entries live only in Redis until the ledger writer copies them: in production,
// refuse a Redis that would lose or evict them, before anything starts (shared/redis/durability.ts).
const redisDurable = await enforceRedisDurability(config, logger, 'hot-path-durability-check');
const hotPath = await createHotPath(config);
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: hotPath.database.sql, nodeEnv: config.NODE_ENV, service: 'hot-path' });
durabilityGauge(hotPath.metrics.registry, redisDurable);
// The internal listener first (GET /metrics, /healthz, /readyz; METRICS_HOST:HOT_PATH_METRICS_PORT): the
// public port below answers 404 for /metrics, so the scrape target must exist before traffic does.
const internalServer = await new Promise<ReturnType<typeof serve>>((resolve) => {
  const listener = serve(
    { fetch: hotPath.internalApp.fetch, port: config.HOT_PATH_METRICS_PORT, hostname: config.METRICS_HOST },
    (info) => {
      hotPath.logger.info({ port: info.port }, 'hot path metrics listening');
      // Tests and the dev stack read the port from this line (HOT_PATH_METRICS_PORT=0 picks a free one).
      process.stdout.write(`hot-path metrics on http://${config.METRICS_HOST}:${info.port}\n`);
      resolve(listener);
    },
  );
});
const server = serve(
  { fetch: hotPath.app.fetch, port: config.HOT_PATH_PORT, hostname: config.HOT_PATH_HOST },
  (info) => {
    hotPath.logger.info({ port: info.port }, 'hot path listening');
    // A line other processes (tests, the dev stack) wait for.
    process.stdout.write(`hot-path ready on http://${config.HOT_PATH_HOST}:${info.port}\n`);
  },
);

function shutdown(): void {
  internalServer.close();
  server.close(() => {
    hotPath.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
