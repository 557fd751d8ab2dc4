/** `npm run start:hot-path`: the authorization server as its own process. */
import { serve } from '@hono/node-server';
import { configFromProcess, warnOfPublicSecrets } from '../shared/config.ts';
import { durabilityGauge, enforceRedisDurability } from '../shared/redis/durability.ts';
import { createLogger } from './ops/logger.ts';
import { createHotPath } from './server.ts';

const config = configFromProcess();
const logger = createLogger(config.LOG_LEVEL, 'hot-path');
// The config accepts a public secret only in explicit development on loopback; say so, loudly.
warnOfPublicSecrets(config, logger);
// Holds and outbox entries live only in Redis until the ledger writer copies them: in production,
// refuse a Redis that would lose or evict them, before anything starts (shared/redis/durability.ts).
const redisDurable = await enforceRedisDurability(config, logger, 'hot-path-durability-check');
const hotPath = await createHotPath(config);
durabilityGauge(hotPath.metrics.registry, redisDurable);
const server = serve(
  { fetch: hotPath.app.fetch, port: config.HOT_PATH_PORT, hostname: config.HOT_PATH_HOST },
  (info) => {
    hotPath.logger.info({ port: info.port }, 'hot path listening');
    // A line other processes (tests, the dev stack) wait for.
    process.stdout.write(`hot-path ready on http://${config.HOT_PATH_HOST}:${info.port}\n`);
  },
);

function shutdown(): void {
  server.close(() => {
    hotPath.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
