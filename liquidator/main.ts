/**
 * The liquidator process: `npm run start:liquidator`. Needs the key holding the vault's liquidator role
 * and the USDC it repays with: LIQUIDATOR_KEY_LABEL (a key in the PKCS#11 token, shared/hsm) or, in
 * development and test only, LIQUIDATOR_PRIVATE_KEY. Runs until SIGTERM/SIGINT.
 *
 * Internal listener on METRICS_HOST:LIQUIDATOR_METRICS_PORT (0 picks a free port, announced on stdout
 * as `liquidator metrics on http://…`): GET /metrics (when METRICS_ENABLED), /healthz, and /readyz —
 * ready while Postgres and the chain RPC answer and this process holds the chain's liquidator lock.
 *
 * Flags: --poll-interval-ms N, --resend-after-ms N; for crash tests only (refused when NODE_ENV=production),
 * --crash-after broadcast, which SIGKILLs the process right after a liquidation is broadcast.
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
import { createLiquidator } from './index.ts';
import { createLiquidatorMetrics } from './metrics.ts';

const flags = z
  .object({
    'poll-interval-ms': z.coerce.number().int().min(10).max(60_000).optional(),
    'resend-after-ms': z.coerce.number().int().min(10).max(3_600_000).optional(),
    'crash-after': z.enum(['broadcast']).optional(),
  })
  .parse(
    parseArgs({
      options: {
        'poll-interval-ms': { type: 'string' },
        'resend-after-ms': { type: 'string' },
        'crash-after': { type: 'string' },
      },
    }).values,
  );

const config = configFromProcess();
const logger = createLogger(config.LOG_LEVEL, 'liquidator');
if (flags['crash-after'] !== undefined && config.NODE_ENV === 'production') {
  logger.fatal('--crash-after is a test fault and is refused in production');
  process.exit(78);
}
const signer = await signerOrExit(config, 'liquidator', 'liquidator');
const contracts = readContractsFile(config.CONTRACTS_FILE);
const database = createDatabase({
  url: config.DATABASE_URL,
  poolMax: 3,
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'credana-liquidator',
});
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: database.sql, nodeEnv: config.NODE_ENV, service: 'liquidator' });
const rpc = createRpc({ url: config.CHAIN_RPC_URL, chainId: config.CHAIN_ID });
const metrics = createLiquidatorMetrics(createServiceRegistry('liquidator'));
const account = signer.account;
const liquidator = createLiquidator({
  sql: database.sql,
  client: rpc.client,
  account,
  contracts,
  logger,
  metrics,
  maxFeePerGasWei: BigInt(config.CHAIN_MAX_FEE_PER_GAS_GWEI) * 1_000_000_000n,
  confirmations: config.CHAIN_CONFIRMATIONS,
  reorgDepthMax: config.REORG_DEPTH_MAX,
  healthWarningBps: config.HEALTH_FACTOR_WARNING_BPS,
  ...(flags['poll-interval-ms'] === undefined ? {} : { pollIntervalMs: flags['poll-interval-ms'] }),
  ...(flags['resend-after-ms'] === undefined ? {} : { resendAfterMs: flags['resend-after-ms'] }),
  ...(flags['crash-after'] === 'broadcast'
    ? {
        afterBroadcast: () => {
          // Written synchronously: the logger buffers, and nothing survives a SIGKILL.
          writeSync(2, 'crash fault injected after broadcast: SIGKILL\n');
          process.kill(process.pid, 'SIGKILL');
        },
      }
    : {}),
});
// The internal listener first, so health checks and the scrape target exist before the first scan.
const internal = await serveLockedWorkerInternal({
  service: 'liquidator',
  logger,
  registry: metrics.registry,
  sql: database.sql,
  client: rpc.client,
  lockHeld: () => liquidator.lockHeld(),
  metricsEnabled: config.METRICS_ENABLED,
  host: config.METRICS_HOST,
  port: config.LIQUIDATOR_METRICS_PORT,
  portVariable: 'LIQUIDATOR_METRICS_PORT',
});
process.once('SIGTERM', () => void liquidator.stop());
process.once('SIGINT', () => void liquidator.stop());
logger.info(
  {
    liquidator: account.address,
    key: signer.keyId,
    healthWarningBps: config.HEALTH_FACTOR_WARNING_BPS,
    confirmations: config.CHAIN_CONFIRMATIONS,
  },
  'liquidator started',
);
let exitCode = 0;
try {
  await liquidator.run();
} catch (error) {
  exitCode = 1;
  logger.fatal({ err: error }, 'liquidator stopped');
} finally {
  await internal.close();
  signer.close();
  await database.close();
}
process.exit(exitCode);
