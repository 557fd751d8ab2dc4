/**
 * The settlement worker process: `npm run start:settlement`. Needs the key holding the vault's settler
 * role: SETTLER_KEY_LABEL (a key in the PKCS#11 token, shared/hsm) or, in development and test only,
 * SETTLER_PRIVATE_KEY. Runs until SIGTERM/SIGINT.
 *
 * Internal listener on METRICS_HOST:SETTLEMENT_METRICS_PORT (0 picks a free port, announced on stdout
 * as `settlement metrics on http://…`): GET /metrics (when METRICS_ENABLED), /healthz, and /readyz —
 * ready while Postgres and the chain RPC answer and this process holds the chain's settlement lock.
 *
 * Flags: --poll-interval-ms N, --resend-after-ms N, --batch-max N; and, for crash tests only (refused
 * when NODE_ENV=production), --crash-after save|broadcast|refund-broadcast, which SIGKILLs the process
 * at that point.
 */
import { writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { readContractsFile } from '../shared/chain/contracts/index.ts';
import { serveLockedWorkerInternal } from '../shared/chain/health.ts';
import { createRpc } from '../shared/chain/rpc/index.ts';
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { guardServiceRole } from '../shared/db/service-role.ts';
import { signerOrExit } from '../shared/hsm/index.ts';
import { createLogger, createServiceRegistry } from '../shared/observability/index.ts';
import { createServiceRedis } from '../shared/redis/client.ts';
import { createSettlementMetrics, createSettlementWorker } from './index.ts';
import { SETTLEMENT_LIMITS } from './limits.ts';

const flags = z
  .object({
    'poll-interval-ms': z.coerce.number().int().min(10).max(60_000).optional(),
    'resend-after-ms': z.coerce.number().int().min(10).max(3_600_000).optional(),
    'batch-max': z.coerce.number().int().min(1).max(SETTLEMENT_LIMITS.settlementBatchMax).optional(),
    'crash-after': z.enum(['save', 'broadcast', 'refund-broadcast']).optional(),
  })
  .parse(
    parseArgs({
      options: {
        'poll-interval-ms': { type: 'string' },
        'resend-after-ms': { type: 'string' },
        'batch-max': { type: 'string' },
        'crash-after': { type: 'string' },
      },
    }).values,
  );

const config = configFromProcess();
const logger = createLogger(config.LOG_LEVEL, 'settlement');
if (flags['crash-after'] !== undefined && config.NODE_ENV === 'production') {
  logger.fatal('--crash-after is a test fault and is refused in production');
  process.exit(78);
}
const signer = await signerOrExit(config, 'settler', 'settlement');
const contracts = readContractsFile(config.CONTRACTS_FILE);
const database = createDatabase({
  url: config.DATABASE_URL,
  poolMax: 3,
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'credana-settlement',
});
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: database.sql, nodeEnv: config.NODE_ENV, service: 'settlement' });
const rpc = createRpc({ url: config.CHAIN_RPC_URL, chainId: config.CHAIN_ID });
const crash = (at: string) => () => {
  // Written synchronously: the logger buffers, and nothing survives a SIGKILL.
  writeSync(2, `crash fault injected after ${at}: SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
};
const redis = createServiceRedis(config, { connectionName: 'credana-settlement' });
const metrics = createSettlementMetrics(createServiceRegistry('settlement'));
const worker = createSettlementWorker({
  sql: database.sql,
  maxFeePerGasWei: BigInt(config.CHAIN_MAX_FEE_PER_GAS_GWEI) * 1_000_000_000n,
  metrics,
  redis: { client: redis, prefix: config.REDIS_KEY_PREFIX },
  client: rpc.client,
  account: signer.account,
  vault: contracts.vault,
  chainId: config.CHAIN_ID,
  logger,
  ...(flags['poll-interval-ms'] === undefined ? {} : { pollIntervalMs: flags['poll-interval-ms'] }),
  ...(flags['resend-after-ms'] === undefined ? {} : { resendAfterMs: flags['resend-after-ms'] }),
  ...(flags['batch-max'] === undefined ? {} : { batchMax: flags['batch-max'] }),
  ...(flags['crash-after'] === 'save' ? { afterSave: crash('save') } : {}),
  ...(flags['crash-after'] === 'broadcast' ? { afterBroadcast: crash('broadcast') } : {}),
  ...(flags['crash-after'] === 'refund-broadcast'
    ? {
        afterBroadcast: (_hash: string, kind: 'spend' | 'refund') => {
          if (kind === 'refund') crash('refund broadcast')();
        },
      }
    : {}),
});
// The internal listener first, so health checks and the scrape target exist before the first round.
const internal = await serveLockedWorkerInternal({
  service: 'settlement',
  logger,
  registry: metrics.registry,
  sql: database.sql,
  client: rpc.client,
  lockHeld: () => worker.lockHeld(),
  metricsEnabled: config.METRICS_ENABLED,
  host: config.METRICS_HOST,
  port: config.SETTLEMENT_METRICS_PORT,
  portVariable: 'SETTLEMENT_METRICS_PORT',
});
process.once('SIGTERM', () => void worker.stop());
process.once('SIGINT', () => void worker.stop());
logger.info({ settler: signer.account.address, key: signer.keyId }, 'settlement worker started');
let exitCode = 0;
try {
  await worker.run();
} catch (error) {
  exitCode = 1;
  logger.fatal({ err: error }, 'settlement worker stopped');
} finally {
  await internal.close();
  redis.disconnect();
  signer.close();
  await database.close();
}
process.exit(exitCode);
