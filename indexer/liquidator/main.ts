/**
 * The liquidator process: `npm run start:liquidator`. Needs the key holding the vault's liquidator role
 * and the USDC it repays with: LIQUIDATOR_KEY_LABEL (a key in the PKCS#11 token, shared/hsm) or, in
 * development and test only, LIQUIDATOR_PRIVATE_KEY. Runs until SIGTERM/SIGINT.
 *
 * Flags: --poll-interval-ms N, --resend-after-ms N, --metrics-port N (Prometheus text at GET /metrics
 * on 127.0.0.1, when METRICS_ENABLED); for crash tests only (refused when NODE_ENV=production),
 * --crash-after broadcast, which SIGKILLs the process right after a liquidation is broadcast.
 */
import { writeSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { z } from 'zod';
import { configFromProcess } from '../../shared/config.ts';
import { createDatabase } from '../../shared/db/client.ts';
import { signerOrExit } from '../../shared/hsm/index.ts';
import { readContractsFile } from '../contracts/index.ts';
import { createRpc } from '../rpc/index.ts';
import { createLiquidator, createLiquidatorMetrics } from './index.ts';

const flags = z
  .object({
    'poll-interval-ms': z.coerce.number().int().min(10).max(60_000).optional(),
    'resend-after-ms': z.coerce.number().int().min(10).max(3_600_000).optional(),
    'metrics-port': z.coerce.number().int().min(0).max(65_535).optional(),
    'crash-after': z.enum(['broadcast']).optional(),
  })
  .parse(
    parseArgs({
      options: {
        'poll-interval-ms': { type: 'string' },
        'resend-after-ms': { type: 'string' },
        'metrics-port': { type: 'string' },
        'crash-after': { type: 'string' },
      },
    }).values,
  );

const config = configFromProcess();
const logger = pino({ level: config.LOG_LEVEL, base: { service: 'liquidator' } });
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
const rpc = createRpc({ url: config.CHAIN_RPC_URL, chainId: config.CHAIN_ID });
const metrics = createLiquidatorMetrics();
const metricsServer =
  flags['metrics-port'] === undefined || !config.METRICS_ENABLED
    ? null
    : createServer((req, res) => {
        if (req.method !== 'GET' || req.url !== '/metrics') {
          res.writeHead(404).end();
          return;
        }
        metrics.registry
          .metrics()
          .then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text))
          .catch(() => res.writeHead(500).end());
      }).listen(flags['metrics-port'], '127.0.0.1');
const account = signer.account;
const liquidator = createLiquidator({
  sql: database.sql,
  client: rpc.client,
  account,
  contracts,
  logger,
  metrics,
  maxFeePerGasWei: BigInt(config.CHAIN_MAX_FEE_PER_GAS_GWEI) * 1_000_000_000n,
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
process.once('SIGTERM', () => void liquidator.stop());
process.once('SIGINT', () => void liquidator.stop());
logger.info(
  { liquidator: account.address, key: signer.keyId, healthWarningBps: config.HEALTH_FACTOR_WARNING_BPS },
  'liquidator started',
);
let exitCode = 0;
try {
  await liquidator.run();
} catch (error) {
  exitCode = 1;
  logger.fatal({ err: error }, 'liquidator stopped');
} finally {
  metricsServer?.close();
  signer.close();
  await database.close();
}
process.exit(exitCode);
