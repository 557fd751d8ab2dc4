/**
 * The indexer process: `npm run start:indexer`. Reads the environment once (shared/config.ts), the
 * contracts file, and follows the chain until SIGTERM/SIGINT. Exits 2 when it halts on a condition it
 * must not guess about (a reorg deeper than REORG_DEPTH_MAX), 1 on other fatal errors.
 *
 * Flags (tuning, not configuration): --block-range-max N, --poll-interval-ms N, --tail-blocks-max N,
 * --metrics-port N (its internal listener on METRICS_HOST, announced on stdout as `indexer metrics on
 * http://…`: GET /metrics when METRICS_ENABLED, /healthz, and /readyz — ready while Postgres, Redis and
 * the chain RPC answer);
 * and, for crash tests only (refused when NODE_ENV=production), --crash-in-range N, which SIGKILLs the
 * process inside the N-th range's transaction, after its writes and before its commit.
 */
import { writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { readContractsFile } from '../shared/chain/contracts/index.ts';
import { chainServiceReadiness } from '../shared/chain/health.ts';
import { LIMITS } from '../shared/chain/limits.ts';
import { createRpc, NonRetryableError } from '../shared/chain/rpc/index.ts';
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { guardServiceRole } from '../shared/db/service-role.ts';
import {
  createInternalApp,
  createLogger,
  createServiceRegistry,
  serveInternal,
} from '../shared/observability/index.ts';
import { createServiceRedis } from '../shared/redis/client.ts';
import { createIndexer, createIndexerMetrics } from './runtime/index.ts';

const flags = z
  .object({
    'block-range-max': z.coerce.number().int().min(LIMITS.blockRangeMin).max(LIMITS.blockRangeMax).optional(),
    'poll-interval-ms': z.coerce.number().int().min(10).max(60_000).optional(),
    'tail-blocks-max': z.coerce.number().int().min(1).max(LIMITS.tailBlocksPerStepMax).optional(),
    'crash-in-range': z.coerce.number().int().min(1).optional(),
    'metrics-port': z.coerce.number().int().min(0).max(65_535).optional(),
  })
  .parse(
    parseArgs({
      options: {
        'block-range-max': { type: 'string' },
        'poll-interval-ms': { type: 'string' },
        'tail-blocks-max': { type: 'string' },
        'crash-in-range': { type: 'string' },
        'metrics-port': { type: 'string' },
      },
    }).values,
  );

const config = configFromProcess();
const logger = createLogger(config.LOG_LEVEL, 'indexer');
if (flags['crash-in-range'] !== undefined && config.NODE_ENV === 'production') {
  logger.fatal('--crash-in-range is a test fault and is refused in production');
  process.exit(78);
}
const contracts = readContractsFile(config.CONTRACTS_FILE);
if (contracts.chainId !== config.CHAIN_ID) {
  logger.fatal({ file: contracts.chainId, config: config.CHAIN_ID }, 'contracts file is for another chain');
  process.exit(78);
}
const database = createDatabase({
  url: config.DATABASE_URL,
  poolMax: Math.min(config.DATABASE_POOL_MAX, 5),
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'credana-indexer',
});
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: database.sql, nodeEnv: config.NODE_ENV, service: 'indexer' });
const redis = createServiceRedis(config, { connectionName: 'credana-indexer' });
const rpc = createRpc({
  url: config.CHAIN_RPC_URL,
  chainId: config.CHAIN_ID,
  onRetry: ({ method, attempt, error, delayMs }) =>
    logger.warn({ method, attempt, code: error.code, delayMs }, 'rpc call failed; retrying'),
});
const indexer = createIndexer({
  sql: database.sql,
  redis,
  prefix: config.REDIS_KEY_PREFIX,
  logger,
  client: rpc.client,
  contracts,
  chainId: config.CHAIN_ID,
  confirmations: config.CHAIN_CONFIRMATIONS,
  reorgDepthMax: config.REORG_DEPTH_MAX,
  metrics: createIndexerMetrics(createServiceRegistry('indexer')),
  ...(flags['block-range-max'] === undefined
    ? {}
    : { blockRangeMax: flags['block-range-max'], blockRangeInitial: flags['block-range-max'] }),
  ...(flags['poll-interval-ms'] === undefined ? {} : { pollIntervalMs: flags['poll-interval-ms'] }),
  ...(flags['tail-blocks-max'] === undefined ? {} : { tailBlocksPerStepMax: flags['tail-blocks-max'] }),
  ...(flags['crash-in-range'] === undefined ? {} : { beforeCommit: crashInRange(flags['crash-in-range']) }),
});

function crashInRange(n: number) {
  let ranges = 0;
  return (range: { from: bigint; to: bigint; events: number }) => {
    if (++ranges < n) return;
    // Written synchronously: the logger buffers, and nothing survives a SIGKILL.
    writeSync(
      2,
      `crash fault injected mid-range (blocks ${range.from}..${range.to}, ${range.events} events): SIGKILL\n`,
    );
    process.kill(process.pid, 'SIGKILL');
  };
}

const metricsPort = flags['metrics-port'];
const internal =
  metricsPort === undefined
    ? null
    : await serveInternal({
        app: createInternalApp({
          logger,
          registry: indexer.metrics.registry,
          metricsEnabled: config.METRICS_ENABLED,
          readiness: chainServiceReadiness({
            registry: indexer.metrics.registry,
            sql: database.sql,
            client: rpc.client,
            redis,
          }),
        }),
        service: 'indexer',
        host: config.METRICS_HOST,
        port: metricsPort,
        portVariable: '--metrics-port',
      });

let exitCode = 0;
const shutdown = async () => {
  await indexer.stop();
};
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());

try {
  await indexer.run();
} catch (error) {
  exitCode = error instanceof NonRetryableError ? 2 : 1;
  logger.fatal({ err: error }, 'indexer stopped');
} finally {
  await internal?.close();
  redis.disconnect();
  await database.close();
}
process.exit(exitCode);
