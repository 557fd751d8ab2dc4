/**
 * The withdrawal approval service as its own process: `npm run start:withdrawals`. Serves
 * `POST /withdrawals/approvals` (withdrawalRoutes) for internal callers holding INTERNAL_API_TOKEN and,
 * when SUPABASE_JWKS_URL or SUPABASE_JWT_SECRET is set, `POST /me/withdrawals/approvals`
 * (userWithdrawalRoutes) for signed-in cardholders, on WITHDRAWALS_HOST:WITHDRAWALS_PORT, with `GET /healthz` and `GET /readyz` there too (its callers' load
 * balancer checks them) and `GET /metrics` only with `Authorization: Bearer $METRICS_TOKEN`. The
 * internal listener on METRICS_HOST:WITHDRAWALS_METRICS_PORT (0 picks a free port, announced on stdout
 * as `withdrawals metrics on http://…`) serves /metrics, /healthz and /readyz openly. Ready while
 * Postgres, Redis and the chain RPC answer: an approval needs all three. Needs the key
 * holding the vault's WITHDRAWAL_SIGNER_ROLE (WITHDRAWAL_SIGNER_KEY_LABEL, a key in the PKCS#11 token;
 * or, in development and test only, WITHDRAWAL_SIGNER_PRIVATE_KEY) and CONTRACTS_FILE. Refuses to start
 * without either secret, with one line naming it. Runs until
 * SIGTERM/SIGINT.
 */
import { serve } from '@hono/node-server';
import { tokenVerifierFromConfig } from '../shared/auth/from-config.ts';
import { readContractsFile } from '../shared/chain/contracts/index.ts';
import { chainServiceReadiness } from '../shared/chain/health.ts';
import { createRpc } from '../shared/chain/rpc/index.ts';
import {
  configFromProcess,
  isLoopbackHost,
  publicSecretsInUse,
  warnOfPublicSecrets,
} from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { guardServiceRole } from '../shared/db/service-role.ts';
import { signerOrExit } from '../shared/hsm/index.ts';
import { createApp } from '../shared/http/app.ts';
import {
  createInternalApp,
  createLogger,
  createServiceRegistry,
  metricsTokenPresented,
  serveInternal,
} from '../shared/observability/index.ts';
import { createServiceRedis } from '../shared/redis/client.ts';
import { withdrawalApp } from './app.ts';
import { createWithdrawalMetrics } from './metrics.ts';

const config = configFromProcess();
const logger = createLogger(config.LOG_LEVEL, 'withdrawals');
if (config.INTERNAL_API_TOKEN === undefined) {
  process.stderr.write('withdrawals: INTERNAL_API_TOKEN is required\n');
  process.exit(78);
}
// The config accepts a public secret only in development on a loopback HOT_PATH_HOST; this process
// listens on WITHDRAWALS_HOST, so a secret it checks callers with must not be public there either
// (names only, never values).
const publicSecret = publicSecretsInUse(config).find(
  (variable) => variable === 'INTERNAL_API_TOKEN' || variable === 'SUPABASE_JWT_SECRET',
);
if (publicSecret !== undefined && !isLoopbackHost(config.WITHDRAWALS_HOST)) {
  process.stderr.write(
    `withdrawals: ${publicSecret} holds a public secret, refused because WITHDRAWALS_HOST is not a loopback address\n`,
  );
  process.exit(78);
}
warnOfPublicSecrets(config, logger);
const verifier = tokenVerifierFromConfig(config);
const signer = await signerOrExit(config, 'withdrawalSigner', 'withdrawals');
const contracts = readContractsFile(config.CONTRACTS_FILE);
const database = createDatabase({
  url: config.DATABASE_URL,
  poolMax: 3,
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'credana-withdrawals',
});
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: database.sql, nodeEnv: config.NODE_ENV, service: 'withdrawals' });
const redis = createServiceRedis(config, {
  connectionName: 'credana-withdrawals',
  commandTimeoutMs: 2_000,
});
const rpc = createRpc({ url: config.CHAIN_RPC_URL, chainId: config.CHAIN_ID });
const metrics = createWithdrawalMetrics(createServiceRegistry('withdrawals'));
const registry = metrics.registry;
const readiness = chainServiceReadiness({ registry, sql: database.sql, client: rpc.client, redis });
const app = createApp({ logger });
// The internal route, and the cardholder's own when a token verifier is configured (withdrawals/app.ts).
const routes = withdrawalApp(
  {
    sql: database.sql,
    redis,
    prefix: config.REDIS_KEY_PREFIX,
    client: rpc.client,
    contracts,
    signer: signer.account,
    logger,
    onAnswer: (result) => metrics.answers.inc({ result }),
  },
  { internalApiToken: config.INTERNAL_API_TOKEN as string, verifier },
);
app.route('/', routes);
app.get('/healthz', (c) => c.json({ ok: true }));
app.get('/readyz', async (c) => {
  const status = await readiness();
  return c.json(status, status.ready ? 200 : 503);
});
// Callers of this port are other services, not Prometheus: /metrics only with METRICS_TOKEN.
app.get('/metrics', async (c) => {
  if (!config.METRICS_ENABLED || !metricsTokenPresented(c.req.header('authorization'), config.METRICS_TOKEN))
    return c.json({ error: 'not_found' }, 404);
  c.header('Content-Type', registry.contentType);
  return c.body(await registry.metrics());
});
const internal = await serveInternal({
  app: createInternalApp({ registry, readiness, logger, metricsEnabled: config.METRICS_ENABLED }),
  service: 'withdrawals',
  host: config.METRICS_HOST,
  port: config.WITHDRAWALS_METRICS_PORT,
  portVariable: 'WITHDRAWALS_METRICS_PORT',
});
const server = serve(
  { fetch: app.fetch, port: config.WITHDRAWALS_PORT, hostname: config.WITHDRAWALS_HOST },
  (info) => {
    logger.info(
      {
        port: info.port,
        signer: signer.account.address,
        key: signer.keyId,
        userRoute: verifier === null ? 'off (no SUPABASE_JWKS_URL or SUPABASE_JWT_SECRET)' : 'on',
      },
      'withdrawal approval service listening',
    );
    process.stdout.write(`withdrawals ready on http://${config.WITHDRAWALS_HOST}:${info.port}\n`);
  },
);
function shutdown(): void {
  void internal.close();
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
