/**
 * The audit anchorer process: `npm run start:anchorer` (a round every AUDIT_ANCHOR_INTERVAL_S until
 * SIGTERM/SIGINT) and `npm run anchor` (`--once`: one round by hand, its report printed as JSON; exit
 * 0). Needs AUDIT_ANCHOR_KEY_LABEL (the HSM key holding the contract's
 * ANCHORER_ROLE; AUDIT_ANCHOR_PRIVATE_KEY in development and test) and a contracts file naming
 * `auditAnchor`.
 *
 * Its own loop process rather than a scheduled reconciliation job: it holds a signing key (kept in as
 * few processes as possible, and soon in the HSM like the settlement key), sends from that key alone
 * (one sender per key, under an advisory lock, so nonces never collide) and follows its transaction to
 * a receipt; the scheduled jobs' HTTP receiver holds no keys and should not.
 *
 * Internal listener (not with --once) on METRICS_HOST:AUDIT_ANCHOR_METRICS_PORT (0 picks a free port,
 * announced on stdout as `anchorer metrics on http://…`): GET /metrics (when METRICS_ENABLED), /healthz,
 * and /readyz — ready while Postgres and the chain RPC answer and this process holds the chain's
 * anchor lock.
 *
 * Flags: --once; for crash tests only (refused when NODE_ENV=production), --crash-after broadcast, which SIGKILLs the
 * process right after the node accepted the anchor transaction.
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
import { type AnchorerOptions, anchorOnce, createAnchorer, createAnchorMetrics } from './index.ts';

const flags = z
  .object({
    once: z.boolean().default(false),
    'crash-after': z.enum(['broadcast']).optional(),
  })
  .parse(
    parseArgs({
      options: {
        once: { type: 'boolean' },
        'crash-after': { type: 'string' },
      },
    }).values,
  );

const config = configFromProcess();
const logger = createLogger(config.LOG_LEVEL, 'anchorer');
if (flags['crash-after'] !== undefined && config.NODE_ENV === 'production') {
  logger.fatal('--crash-after is a test fault and is refused in production');
  process.exit(78);
}
const contracts = readContractsFile(config.CONTRACTS_FILE);
if (contracts.auditAnchor === undefined) {
  logger.fatal(`${config.CONTRACTS_FILE} names no auditAnchor contract (npm run chain:deploy deploys one)`);
  process.exit(78);
}
const database = createDatabase({
  url: config.DATABASE_URL,
  poolMax: 2,
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'credana-anchorer',
});
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: database.sql, nodeEnv: config.NODE_ENV, service: 'anchorer' });
const rpc = createRpc({ url: config.CHAIN_RPC_URL, chainId: config.CHAIN_ID });
const metrics = createAnchorMetrics(createServiceRegistry('anchorer'));
// The anchorer's key: a key in the HSM (AUDIT_ANCHOR_KEY_LABEL), or a raw key in development and test.
const signer = await signerOrExit(config, 'anchorer', 'anchorer');
const account = signer.account;
const options: AnchorerOptions = {
  sql: database.sql,
  client: rpc.client,
  account,
  contract: contracts.auditAnchor,
  chainId: config.CHAIN_ID,
  logger,
  maxFeePerGasWei: BigInt(config.CHAIN_MAX_FEE_PER_GAS_GWEI) * 1_000_000_000n,
  intervalMs: config.AUDIT_ANCHOR_INTERVAL_S * 1000,
  metrics,
  ...(flags['crash-after'] === 'broadcast'
    ? {
        afterBroadcast: () => {
          // Written synchronously: the logger buffers, and nothing survives a SIGKILL.
          writeSync(2, 'crash fault injected after broadcast: SIGKILL\n');
          process.kill(process.pid, 'SIGKILL');
        },
      }
    : {}),
};

let exitCode = 0;
if (flags.once) {
  try {
    const report = await anchorOnce(options);
    process.stdout.write(
      `${JSON.stringify({ ...report, headSequence: report.headSequence.toString(), anchoredSequence: report.anchoredSequence.toString() })}\n`,
    );
  } catch (error) {
    exitCode = 1;
    logger.error({ err: error }, 'audit anchor round failed');
  } finally {
    signer.close();
    await database.close();
  }
  process.exit(exitCode);
}

const anchorer = createAnchorer(options);
// The internal listener first, so health checks and the scrape target exist before the first round.
const internal = await serveLockedWorkerInternal({
  service: 'anchorer',
  logger,
  registry: metrics.registry,
  sql: database.sql,
  client: rpc.client,
  lockHeld: () => anchorer.lockHeld(),
  metricsEnabled: config.METRICS_ENABLED,
  host: config.METRICS_HOST,
  port: config.AUDIT_ANCHOR_METRICS_PORT,
  portVariable: 'AUDIT_ANCHOR_METRICS_PORT',
});
process.once('SIGTERM', () => void anchorer.stop());
process.once('SIGINT', () => void anchorer.stop());
logger.info({ anchorer: account.address, contract: contracts.auditAnchor }, 'audit anchorer started');
try {
  await anchorer.run();
} catch (error) {
  exitCode = 1;
  logger.fatal({ err: error }, 'audit anchorer stopped');
} finally {
  await internal.close();
  signer.close();
  await database.close();
}
process.exit(exitCode);
