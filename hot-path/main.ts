/**
 * `npm run start:hot-path`: the authorization server as its own process, or with HOT_PATH_WORKERS > 1
 * a primary and that many worker processes sharing the port (workers/primary.ts).
 */
import cluster from 'node:cluster';
import { serve } from '@hono/node-server';
import { type Config, configFromProcess, warnOfPublicSecrets } from '../shared/config.ts';
import { guardServiceRole } from '../shared/db/service-role.ts';
import { createLogger } from '../shared/observability/index.ts';
import { durabilityGauge, enforceRedisDurability } from '../shared/redis/durability.ts';
import { poolBudgetProblem } from './limits.ts';
import { createHotPath } from './server.ts';
import { runPrimary } from './workers/primary.ts';
import { answerInternalRequests } from './workers/protocol.ts';

const config = configFromProcess();
// Every worker has a Postgres pool of its own: together they must fit the role's PgBouncer pool.
const budgetProblem = poolBudgetProblem(config);
if (budgetProblem !== null) {
  process.stderr.write(`config: ${budgetProblem}\n`);
  process.exit(78);
}
if (config.HOT_PATH_WORKERS > 1 && cluster.isPrimary) await runPrimary(config);
else await runHotPath(config, cluster.isWorker);

/**
 * One hot path: the whole process, or (`asWorker`) one worker of a primary, which then answers the
 * internal routes over IPC instead of listening on HOT_PATH_METRICS_PORT and leaves the stdout lines
 * to the primary.
 */
async function runHotPath(config: Config, asWorker: boolean): Promise<void> {
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
  // public port below answers 404 for /metrics, so the scrape target must exist before traffic does. A
  // worker's primary serves it, asking each worker over IPC.
  const internalServer = asWorker
    ? null
    : await new Promise<ReturnType<typeof serve>>((resolve) => {
        const listener = serve(
          {
            fetch: hotPath.internalApp.fetch,
            port: config.HOT_PATH_METRICS_PORT,
            hostname: config.METRICS_HOST,
          },
          (info) => {
            hotPath.logger.info({ port: info.port }, 'hot path metrics listening');
            // Tests and the dev stack read the port from this line (HOT_PATH_METRICS_PORT=0 picks a free one).
            process.stdout.write(`hot-path metrics on http://${config.METRICS_HOST}:${info.port}\n`);
            resolve(listener);
          },
        );
      });
  if (asWorker) answerInternalRequests(hotPath.internalApp);
  const server = serve(
    { fetch: hotPath.app.fetch, port: config.HOT_PATH_PORT, hostname: config.HOT_PATH_HOST },
    (info) => {
      hotPath.logger.info({ port: info.port }, 'hot path listening');
      // A line other processes (tests, the dev stack) wait for; a worker's primary prints its own.
      if (!asWorker) process.stdout.write(`hot-path ready on http://${config.HOT_PATH_HOST}:${info.port}\n`);
    },
  );

  function shutdown(): void {
    internalServer?.close();
    server.close(() => {
      hotPath.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    });
  }
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}
