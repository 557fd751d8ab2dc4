/**
 * The withdrawal approval service as its own process: `npm run start:withdrawals`. Serves
 * `POST /withdrawals/approvals` (withdrawalRoutes) for internal callers holding INTERNAL_API_TOKEN, on
 * WITHDRAWALS_HOST:WITHDRAWALS_PORT, and `GET /healthz`. Needs the key holding the vault's
 * WITHDRAWAL_SIGNER_ROLE (WITHDRAWAL_SIGNER_KEY_LABEL, a key in the PKCS#11 token; or, in development and
 * test only, WITHDRAWAL_SIGNER_PRIVATE_KEY) and CONTRACTS_FILE. Refuses to start without either
 * secret, with one line naming it. Runs until SIGTERM/SIGINT.
 */
import { serve } from '@hono/node-server';
import { pino } from 'pino';
import { configFromProcess } from '../../shared/config.ts';
import { createDatabase } from '../../shared/db/client.ts';
import { signerOrExit } from '../../shared/hsm/index.ts';
import { createRedis } from '../../shared/redis/client.ts';
import { readContractsFile } from '../contracts/index.ts';
import { createRpc } from '../rpc/index.ts';
import { withdrawalRoutes } from './index.ts';

const config = configFromProcess();
const logger = pino({ level: config.LOG_LEVEL, base: { service: 'withdrawals' } });
if (config.INTERNAL_API_TOKEN === undefined) {
  process.stderr.write('withdrawals: INTERNAL_API_TOKEN is required\n');
  process.exit(78);
}
const signer = await signerOrExit(config, 'withdrawalSigner', 'withdrawals');
const contracts = readContractsFile(config.CONTRACTS_FILE);
const database = createDatabase({
  url: config.DATABASE_URL,
  poolMax: 3,
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'credana-withdrawals',
});
const redis = createRedis({
  url: config.REDIS_URL,
  connectionName: 'credana-withdrawals',
  commandTimeoutMs: 2_000,
});
const rpc = createRpc({ url: config.CHAIN_RPC_URL, chainId: config.CHAIN_ID });
const app = withdrawalRoutes(
  {
    sql: database.sql,
    redis,
    prefix: config.REDIS_KEY_PREFIX,
    client: rpc.client,
    contracts,
    signer: signer.account,
    logger,
  },
  config.INTERNAL_API_TOKEN as string,
);
app.get('/healthz', (c) => c.json({ ok: true }));
const server = serve(
  { fetch: app.fetch, port: config.WITHDRAWALS_PORT, hostname: config.WITHDRAWALS_HOST },
  (info) => {
    logger.info(
      { port: info.port, signer: signer.account.address, key: signer.keyId },
      'withdrawal approval service listening',
    );
    process.stdout.write(`withdrawals ready on http://${config.WITHDRAWALS_HOST}:${info.port}\n`);
  },
);
function shutdown(): void {
  server.close(() => {
    redis.disconnect();
    signer.close();
    database.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
