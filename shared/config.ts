/**
 * The one reader of `process.env`. Every setting is parsed once by zod at start-up; a missing or
 * invalid value stops the process with one line naming the variable, and never prints a secret value.
 * Services receive the parsed `Config` (or a slice of it) through their factories.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { z } from 'zod';
import { HOLD_EXPIRY_DEFAULTS } from './policy/hold-expiry.ts';

// Plain decimal digits only: `z.coerce.number()` would read " " as 0 and accept 0x10 or 1e2.
const integer = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d{1,10}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
const bigintString = z
  .string()
  .regex(/^\d{1,18}$/, 'must be a non-negative integer')
  .transform((value) => BigInt(value));
const csv = z.string().transform((value) =>
  value
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0),
);
const url = z.string().url();
const bool = z.enum(['true', 'false']).transform((value) => value === 'true');
const keyLabelString = z
  .string()
  .regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 letters, digits, dots, dashes or underscores');

/** Variables whose values are secrets: never echoed, not even in error messages. */
export const SECRET_VARIABLES = new Set([
  'STRIPE_WEBHOOK_SECRETS',
  'QSTASH_TOKEN',
  'QSTASH_CURRENT_SIGNING_KEY',
  'QSTASH_NEXT_SIGNING_KEY',
  'SUPABASE_JWT_SECRET',
  'SUPABASE_SERVICE_ROLE_KEY',
  'SETTLER_PRIVATE_KEY',
  'WITHDRAWAL_SIGNER_PRIVATE_KEY',
  'LIQUIDATOR_PRIVATE_KEY',
  'AUDIT_ANCHOR_PRIVATE_KEY',
  'INTERNAL_API_TOKEN',
  'METRICS_TOKEN',
  'STRIPE_SECRET_KEY',
  'BACKUP_S3_KEY',
  'BACKUP_S3_KEY_SECRET',
  'BACKUP_CIPHER_PASS',
  'PKCS11_PIN',
]);

/**
 * The chain signers: each takes a raw key (development and test only) or the label of a secp256k1
 * key in the PKCS#11 token (shared/hsm, docs/operations.md "Keys in an HSM").
 */
export const CHAIN_SIGNERS = {
  settler: { privateKey: 'SETTLER_PRIVATE_KEY', keyLabel: 'SETTLER_KEY_LABEL' },
  withdrawalSigner: { privateKey: 'WITHDRAWAL_SIGNER_PRIVATE_KEY', keyLabel: 'WITHDRAWAL_SIGNER_KEY_LABEL' },
  liquidator: { privateKey: 'LIQUIDATOR_PRIVATE_KEY', keyLabel: 'LIQUIDATOR_KEY_LABEL' },
  anchorer: { privateKey: 'AUDIT_ANCHOR_PRIVATE_KEY', keyLabel: 'AUDIT_ANCHOR_KEY_LABEL' },
} as const;
export type ChainSignerRole = keyof typeof CHAIN_SIGNERS;

/** The largest secret file `<NAME>_FILE` may name (a PEM bundle fits; a misnamed disk image does not). */
export const SECRET_FILE_BYTES_MAX = 65_536;

/**
 * Blocks after which a chain's blocks are taken as final: the default for CHAIN_CONFIRMATIONS and,
 * when NODE_ENV=production, its floor (docs/chain.md "Oracle sanity"). Ethereum and its testnets
 * finalise after two epochs (64 slots, Ponder uses 65); Polygon PoS and Arbitrum values are Ponder's
 * (utils/finality.ts). Local development chains need no depth (1: the including block).
 */
export const CHAIN_FINALITY_BLOCKS: Readonly<Record<number, number>> = {
  1: 65, // Ethereum mainnet
  11155111: 65, // Sepolia
  17000: 65, // Holesky
  137: 200, // Polygon PoS
  42161: 240, // Arbitrum One
  10: 30, // OP Mainnet
  8453: 30, // Base
  31337: 1, // Hardhat / anvil (local)
  1337: 1, // Ganache / geth --dev (local)
};
/** A chain not in the table: as deep as Ethereum's finality (set CHAIN_CONFIRMATIONS on purpose). */
export const CHAIN_FINALITY_BLOCKS_UNKNOWN = 65;

export function chainFinalityBlocks(chainId: number): number {
  return CHAIN_FINALITY_BLOCKS[chainId] ?? CHAIN_FINALITY_BLOCKS_UNKNOWN;
}

/**
 * The local stack's signing secret: the default of STRIPE_WEBHOOK_SECRETS, so it is public. Accepted
 * only in explicit local development (see `PUBLIC_SECRETS`).
 */
export const DEV_WEBHOOK_SECRET = 'whsec_credana_local_development_only';

/**
 * Every secret value written in this repository (defaults, the test suite's, the benchmark's, the
 * examples'). Anyone can read them, so anyone could sign with them: a process accepts one of them in a
 * secret variable only in explicit local development — NODE_ENV set to `development` or `test` (never
 * defaulted) and every address it listens on (HOT_PATH_HOST) a loopback address. `shared/config.test.ts`
 * scans the repository so a new secret-looking literal cannot be added without being listed here.
 */
export const PUBLIC_SECRETS: ReadonlySet<string> = new Set([
  DEV_WEBHOOK_SECRET,
  // test/support/stripe.ts, scripts/bench/run.ts, hot-path/app.test.ts
  'whsec_test_secret_for_the_suite_0001',
  'whsec_bench_secret_not_for_production_0001',
  'whsec_the_new_secret_after_roll_1',
  'whsec_someone_elses_secret_000000',
  'whsec_second_secret_for_the_roll', // shared/config.test.ts
  // QStash signing keys of hot-path/outbox/qstash.test.ts and reconciler/http.test.ts
  'sig_current_signing_key_for_tests_01',
  'sig_current_signing_key_for_order_1', // hot-path/outbox/qstash-order.test.ts
  'sig_next_signing_key_for_order_0002',
  'sig_next_signing_key_for_tests_0002',
  'sig_someone_else_entirely_000',
  'sig_current_key_for_tests_000001',
  'sig_next_key_for_tests_0000000002',
  // The Stripe API key of the reconciliation tests' local Stripe server (reconciler/stripe-api.test.ts)
  'sk_test_credana_local_stripe_server_only_01',
  'sk_test_someone_else_key_but_not_ours_9',
  // Supabase CLI's well-known local JWT secret (shared/auth/verify-token.test.ts)
  'super-secret-jwt-token-with-at-least-32-characters-long',
]);

const schema = z.object({
  // Unset means production: development (public secrets, Redis without durable persistence) is only
  // ever chosen explicitly.
  NODE_ENV: z.enum(['development', 'test', 'production']).default('production'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),

  DATABASE_URL: url.default('postgres://postgres@127.0.0.1:5432/credana'),
  ANALYTICS_DATABASE_URL: url.optional(),
  // The financial database's streaming read replica, for reads that may lag (analytics ingestion:
  // shared/db/replica.ts). Unset: they read the primary.
  READ_REPLICA_URL: url.optional(),
  // Past this many WAL bytes behind the primary, the replica is skipped (16 MiB: one WAL segment).
  READ_REPLICA_LAG_BYTES_MAX: integer(0, 1_073_741_824).default(16_777_216),
  // The analytics store's history (docs/analytics.md): TimescaleDB compresses series chunks older
  // than this; both backends drop series data older than the retention.
  ANALYTICS_COMPRESS_AFTER_DAYS: integer(1, 3_650).default(30),
  ANALYTICS_RETENTION_DAYS: integer(2, 36_500).default(730),
  DATABASE_POOL_MAX: integer(1, 200).default(10),
  DATABASE_STATEMENT_TIMEOUT_MS: integer(10, 600_000).default(5_000),

  REDIS_URL: url.default('redis://127.0.0.1:6379'),
  // Comma-separated host:port seeds of a Redis Cluster (docs/redis-layout.md, "Redis Cluster"). Set:
  // every service talks to the cluster through them and REDIS_URL is not used; unset: one Redis.
  REDIS_CLUSTER_NODES: csv
    .pipe(
      z
        .array(z.string().regex(/^[A-Za-z0-9.-]+:[0-9]{1,5}$/, 'each node must be host:port'))
        .max(64, 'lists at most 64 seed nodes'),
    )
    .default([]),
  REDIS_KEY_PREFIX: z
    .string()
    .regex(/^[a-z0-9:_-]{1,32}$/i)
    .default('cr:'),
  REDIS_COMMAND_TIMEOUT_MS: integer(1, 60_000).default(150),
  // The whole Redis attempt of one decision (every round trip of it); past it the Postgres fallback
  // decides in what is left of DECISION_BUDGET_MS, so a stalled Redis cannot eat the budget.
  REDIS_DECISION_BUDGET_MS: integer(1, 1_900).default(250),
  // A hot-path process deciding from Redis renews a lease in Postgres (every quarter of this); the
  // Postgres fallback grants only while no other process holds a live one.
  REDIS_DECIDER_LEASE_MS: integer(200, 60_000).default(1_000),
  // What the Postgres fallback may grant one user in all, until its decisions are adopted into Redis
  // (one outage): bounds what a decision it cannot see (an unwritten outbox entry) can add to it.
  FALLBACK_GRANT_CENTS_MAX: bigintString.default(50_000n),
  // The weakest AOF fsync policy the hot path and the ledger writer accept from Redis in production
  // (shared/redis/durability.ts; docs/operations.md says why `always` is the default).
  REDIS_REQUIRED_APPENDFSYNC: z.enum(['always', 'everysec']).default('always'),
  // An approval is answered only once this many replicas acknowledged it (WAIT, pipelined with the
  // decision); fewer → declined `replication_unconfirmed` and its hold released. 0 = off (no WAIT).
  // docs/hot-path.md "Replication".
  REDIS_WAIT_REPLICAS: integer(0, 16).default(0),
  // How long that WAIT may block; at most half of REDIS_DECISION_BUDGET_MS and below
  // REDIS_COMMAND_TIMEOUT_MS, so the release after a shortfall still fits the Redis attempt.
  REDIS_WAIT_TIMEOUT_MS: integer(1, 950).default(50),

  HOT_PATH_HOST: z.string().default('127.0.0.1'),
  HOT_PATH_PORT: integer(0, 65_535).default(8787),
  // `npm run start:hot-path`: worker processes sharing HOT_PATH_PORT (node:cluster), each with its own
  // Redis connections and Postgres pool; 1 = one process, no primary (docs/hot-path.md "Many processes").
  HOT_PATH_WORKERS: integer(1, 64).default(1),
  // The server connections PgBouncer gives the hot path's role (default_pool_size in
  // deploy/pgbouncer/pgbouncer.ini). The hot path refuses to start when HOT_PATH_WORKERS ×
  // DATABASE_POOL_MAX exceeds it (hot-path/limits.ts, poolBudgetProblem).
  PGBOUNCER_ROLE_POOL_SIZE: integer(1, 10_000).default(40),
  // Comma-separated: during a secret roll both the old and the new secret are listed.
  STRIPE_WEBHOOK_SECRETS: csv
    .pipe(
      z
        .array(z.string().min(16, 'each secret needs at least 16 characters'))
        .min(1, 'needs at least one secret'),
    )
    .default([DEV_WEBHOOK_SECRET]),
  STRIPE_API_VERSION: z.string().min(8).default('2025-03-31.basil'),
  STRIPE_SIGNATURE_TOLERANCE_S: integer(1, 3_600).default(300),
  // The nightly `stripe` reconciliation reads Issuing transactions and authorizations from Stripe's API
  // with this key (a restricted key with read access to Issuing is enough). Unset: the job can only run
  // by hand on an export file, and the scheduler refuses to start in production.
  STRIPE_SECRET_KEY: z
    .string()
    .regex(
      /^(sk|rk)_(test|live)_[A-Za-z0-9_]{16,}$/,
      'must be a Stripe secret or restricted key (sk_… or rk_…)',
    )
    .optional(),
  // Stripe's API base; tests point it at a local server that speaks Stripe's list format.
  STRIPE_API_URL: url.default('https://api.stripe.com'),
  WEBHOOK_BODY_LIMIT_BYTES: integer(1_024, 1_048_576).default(65_536),
  DECISION_BUDGET_MS: integer(20, 1_900).default(400),
  BLOCKED_MCCS: csv
    .pipe(z.array(z.string().regex(/^\d{4}$/, 'must be 4-digit merchant category codes')))
    .default(['7995', '6051']),
  VELOCITY_LIMIT_PER_MIN: integer(1, 10_000).default(20),
  DAILY_LIMIT_CENTS_DEFAULT: bigintString.default(500_000n),
  // The program's ceiling on a new user's daily limit (docs/controls.md); ops change it per user.
  DAILY_LIMIT_CEILING_CENTS_DEFAULT: bigintString.default(1_000_000n),
  // A user's daily limit increase waits this long before it applies; a decrease applies at once.
  DAILY_LIMIT_INCREASE_COOLDOWN_S: integer(0, 30 * 86_400).default(86_400),
  // Cash withdrawals (MCC 6010 manual cash, 6011 ATM): block (default) or allow for every user.
  CASH_WITHDRAWAL_POLICY: z.enum(['block', 'allow']).default('block'),
  CREDIT_LIMIT_CENTS_DEFAULT: bigintString.default(2_500_000n),
  HOLD_TTL_S: integer(60, 40 * 86_400).default(HOLD_EXPIRY_DEFAULTS.HOLD_TTL_S),
  HOLD_TTL_LODGING_S: integer(60, 40 * 86_400).default(HOLD_EXPIRY_DEFAULTS.HOLD_TTL_LODGING_S),

  QUEUE_DRIVER: z.enum(['redis', 'qstash']).default('redis'),
  QSTASH_URL: url.default('https://qstash.upstash.io'),
  QSTASH_TOKEN: z.string().optional(),
  QSTASH_CURRENT_SIGNING_KEY: z.string().optional(),
  QSTASH_NEXT_SIGNING_KEY: z.string().optional(),
  LEDGER_WRITER_PUBLIC_URL: url.default('http://127.0.0.1:8788/qstash'),
  LEDGER_WRITER_PORT: integer(0, 65_535).default(8788),
  LEDGER_BATCH_MAX: integer(1, 10_000).default(500),
  LEDGER_BATCH_WAIT_MS: integer(1, 10_000).default(20),
  // Lease of an outbox shard held by one ledger writer (ledger-writer/shards.ts): a killed
  // writer's shards are taken over within 1.25 × this; LEDGER_BATCH_WAIT_MS must be under a quarter.
  LEDGER_SHARD_LEASE_MS: integer(1_000, 600_000).default(10_000),

  CHAIN_RPC_URL: url.default('http://127.0.0.1:8545'),
  CHAIN_ID: integer(1, 2_147_483_647).default(31_337),
  CONTRACTS_FILE: z.string().default('.dev/contracts.json'),
  // Default: the chain's finality depth (CHAIN_FINALITY_BLOCKS); in production never below it.
  CHAIN_CONFIRMATIONS: integer(0, 1_000).optional(),
  // Default: 64, or the chain's finality depth when deeper (confirmations must fit in the window).
  REORG_DEPTH_MAX: integer(1, 10_000).optional(),
  SETTLER_PRIVATE_KEY: z
    .string()
    .regex(/^0x[0-9a-fA-F]{64}$/, 'must be a 0x-prefixed 32-byte hex key')
    .optional(),
  /** The key holding the vault's WITHDRAWAL_SIGNER_ROLE (withdrawal approvals). No default. */
  WITHDRAWAL_SIGNER_PRIVATE_KEY: z
    .string()
    .regex(/^0x[0-9a-fA-F]{64}$/, 'must be a 0x-prefixed 32-byte hex key')
    .optional(),
  /** The key holding the vault's LIQUIDATOR_ROLE and the USDC it repays with. No default. */
  LIQUIDATOR_PRIVATE_KEY: z
    .string()
    .regex(/^0x[0-9a-fA-F]{64}$/, 'must be a 0x-prefixed 32-byte hex key')
    .optional(),
  // Keys in an HSM (shared/hsm, docs/operations.md): the PKCS#11 library, the token's label and the
  // user PIN. Needed when any *_KEY_LABEL below (or DATA_KEK_LABEL) names a key in the token.
  PKCS11_MODULE: z.string().min(1).optional(),
  PKCS11_TOKEN_LABEL: z.string().min(1).max(32).optional(),
  PKCS11_PIN: z.string().min(4, 'needs at least 4 characters').max(256).optional(),
  /** The label of the settler's secp256k1 key in the token (instead of SETTLER_PRIVATE_KEY). */
  SETTLER_KEY_LABEL: keyLabelString.optional(),
  /** The label of the withdrawal signer's key in the token (instead of WITHDRAWAL_SIGNER_PRIVATE_KEY). */
  WITHDRAWAL_SIGNER_KEY_LABEL: keyLabelString.optional(),
  /** The label of the liquidator's key in the token (instead of LIQUIDATOR_PRIVATE_KEY). */
  LIQUIDATOR_KEY_LABEL: keyLabelString.optional(),
  /** The key holding the audit anchor contract's ANCHORER_ROLE (`npm run start:anchorer`). No default. */
  AUDIT_ANCHOR_PRIVATE_KEY: z
    .string()
    .regex(/^0x[0-9a-fA-F]{64}$/, 'must be a 0x-prefixed 32-byte hex key')
    .optional(),
  /** How often the anchorer publishes the audit log's chain head on-chain (when it moved). */
  AUDIT_ANCHOR_INTERVAL_S: integer(10, 86_400).default(600),
  /** The label of the anchorer's key in the token (instead of AUDIT_ANCHOR_PRIVATE_KEY). */
  AUDIT_ANCHOR_KEY_LABEL: keyLabelString.optional(),
  /** The most the program pays per gas for any transaction it sends; above it, it waits. */
  CHAIN_MAX_FEE_PER_GAS_GWEI: integer(1, 100_000).default(200),
  /**
   * The health-factor warning line, in basis points of 1 (11000 = 1.10): below it the liquidator
   * counts the account (liquidator_health_warning_accounts) and the dashboard shows the user a
   * notice; below 10000 the credit is gone and the position is liquidated.
   */
  HEALTH_FACTOR_WARNING_BPS: integer(10_001, 100_000).default(11_000),

  SUPABASE_URL: url.default('http://127.0.0.1:54321'),
  SUPABASE_DB_URL: url.default('postgres://postgres@127.0.0.1:5432/credana_supabase'),
  // Verifying users' access tokens (shared/auth/): the project's JWKS endpoint,
  // `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`, and/or the legacy HS256 secret. With neither set,
  // no user-facing route is mounted (the withdrawal service's `POST /me/withdrawals/approvals`).
  SUPABASE_JWKS_URL: url.optional(),
  SUPABASE_JWT_SECRET: z.string().min(32).optional(),
  SUPABASE_JWT_AUDIENCE: z.string().default('authenticated'),
  SUPABASE_SERVICE_ROLE_KEY: z.string().optional(),
  SUPABASE_SYNC_METRICS_PORT: integer(0, 65_535).default(9466),

  INTERNAL_API_TOKEN: z.string().min(16).optional(),
  // `npm run start:withdrawals`: the withdrawal approval service, for internal callers holding
  // INTERNAL_API_TOKEN and (with a verifier configured, above) signed-in users; it binds 127.0.0.1 unless
  // WITHDRAWALS_HOST says otherwise.
  WITHDRAWALS_HOST: z.string().default('127.0.0.1'),
  WITHDRAWALS_PORT: integer(0, 65_535).default(8790),
  METRICS_ENABLED: bool.default(true),
  // The hot path's internal listener (GET /metrics, /healthz, /readyz), apart from the public webhook
  // port; 0 picks a free port (announced on stdout). Bind it where only Prometheus and the load
  // balancer's health checks reach it.
  HOT_PATH_METRICS_PORT: integer(0, 65_535).default(0),
  // The ledger writer's internal listener when QUEUE_DRIVER=qstash (its LEDGER_WRITER_PORT then faces
  // QStash); with QUEUE_DRIVER=redis LEDGER_WRITER_PORT is internal and serves everything itself.
  LEDGER_WRITER_METRICS_PORT: integer(0, 65_535).default(0),
  // The internal listeners (GET /metrics, /healthz, /readyz on METRICS_HOST) of the settlement worker,
  // the liquidator, the audit anchorer and the withdrawal approval service; 0 picks a free port
  // (announced on stdout).
  SETTLEMENT_METRICS_PORT: integer(0, 65_535).default(0),
  LIQUIDATOR_METRICS_PORT: integer(0, 65_535).default(0),
  AUDIT_ANCHOR_METRICS_PORT: integer(0, 65_535).default(0),
  WITHDRAWALS_METRICS_PORT: integer(0, 65_535).default(0),
  METRICS_HOST: z.string().default('127.0.0.1'),
  // A bearer token that opens GET /metrics on the public ports too (for a scraper that cannot reach the
  // internal listener). Unset: the public ports answer 404 for /metrics.
  METRICS_TOKEN: z.string().min(32).optional(),

  // `npm run dev` and `npm run demo`: the local stack's state (embedded PostgreSQL and redis-server
  // data, stack.json).
  DEV_STATE_DIR: z.string().min(1).default('.dev'),

  // `npm run backup` / `npm run restore` (scripts/backup/, docs/operations.md "Backups and
  // point-in-time recovery"): pgBackRest against the financial Postgres at DATABASE_URL.
  BACKUP_STANZA: z
    .string()
    .regex(/^[a-z0-9_-]{1,64}$/, 'must be 1-64 of a-z 0-9 _ -')
    .default('credana'),
  // Where the generated pgbackrest.conf, its lock, log and spool folders (and restored clusters) live.
  BACKUP_DIR: z.string().min(1).default('.dev/pgbackrest'),
  BACKUP_REPO_TYPE: z.enum(['posix', 's3']).default('posix'),
  // posix: the repository folder (default BACKUP_DIR/repo); s3: the path inside the bucket (default /credana).
  BACKUP_REPO_PATH: z.string().min(1).optional(),
  BACKUP_RETENTION_FULL_DAYS: integer(1, 3_650).default(30),
  // Postgres's archive_timeout that `npm run backup -- --configure` sets: it bounds the data a lost
  // primary loses (RPO) on a quiet database.
  BACKUP_ARCHIVE_TIMEOUT_S: integer(1, 3_600).default(60),
  BACKUP_PROCESS_MAX: integer(1, 64).default(2),
  // Default: asked from the server (data_directory, unix_socket_directories); pgBackRest runs on its host.
  BACKUP_PG_DATA_DIR: z.string().min(1).optional(),
  BACKUP_PG_SOCKET_DIR: z.string().min(1).optional(),
  BACKUP_S3_BUCKET: z.string().min(3).optional(),
  BACKUP_S3_ENDPOINT: z.string().min(3).optional(),
  BACKUP_S3_REGION: z.string().min(2).optional(),
  // auto: the instance's or pod's IAM role (no key anywhere); shared: BACKUP_S3_KEY and BACKUP_S3_KEY_SECRET.
  BACKUP_S3_KEY_TYPE: z.enum(['auto', 'shared']).default('auto'),
  BACKUP_S3_KEY: z.string().min(8).optional(),
  BACKUP_S3_KEY_SECRET: z.string().min(8).optional(),
  // Encrypts the repository (aes-256-cbc, client side); required for an s3 repository in production.
  BACKUP_CIPHER_PASS: z.string().min(32).optional(),
  // `npm run dev -- --observe`: the port (on 127.0.0.1) of the Prometheus it starts.
  DEV_PROMETHEUS_PORT: integer(1, 65_535).default(9090),
  // `npm run dev`: the port (on 127.0.0.1) of the private PgBouncer it starts in front of DATABASE_URL's
  // server; every service it starts connects through it as its own role (docs/ledger.md).
  DEV_PGBOUNCER_PORT: integer(1, 65_535).default(6433),
});

const refined = schema.superRefine((value, ctx) => {
  // It is an invariant that in production a chain key never sits in the environment (or a file the
  // service reads): it lives in the HSM and the service names it by label.
  for (const { privateKey, keyLabel } of Object.values(CHAIN_SIGNERS)) {
    if (value[privateKey] !== undefined && value[keyLabel] !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [keyLabel],
        message: `set ${privateKey} or ${keyLabel}, not both`,
      });
    }
    if (value.NODE_ENV === 'production' && value[privateKey] !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [privateKey],
        message: `a raw private key is refused in production; keep the key in the HSM and name it with ${keyLabel} (docs/operations.md)`,
      });
    }
    if (value[keyLabel] !== undefined) {
      for (const needed of ['PKCS11_MODULE', 'PKCS11_TOKEN_LABEL', 'PKCS11_PIN'] as const) {
        if (value[needed] === undefined) {
          ctx.addIssue({
            code: 'custom',
            path: [needed],
            message: `must be set when ${keyLabel} names a key in the HSM`,
          });
        }
      }
    }
  }
  if (
    value.QUEUE_DRIVER === 'qstash' &&
    (value.QSTASH_TOKEN === undefined ||
      value.QSTASH_CURRENT_SIGNING_KEY === undefined ||
      value.QSTASH_NEXT_SIGNING_KEY === undefined)
  ) {
    ctx.addIssue({
      code: 'custom',
      path: ['QSTASH_TOKEN'],
      message: 'QUEUE_DRIVER=qstash needs QSTASH_TOKEN and both signing keys',
    });
  }
  if (value.NODE_ENV === 'production' && value.STRIPE_SECRET_KEY?.slice(3, 8) === 'test_') {
    // A test-mode key reconciles the books against Stripe's test data: every real capture would look
    // missing at Stripe, and the real missing ones would hide among them.
    ctx.addIssue({
      code: 'custom',
      path: ['STRIPE_SECRET_KEY'],
      message: 'a test-mode key (sk_test_/rk_test_) is refused in production',
    });
  }
  if (value.ANALYTICS_COMPRESS_AFTER_DAYS >= value.ANALYTICS_RETENTION_DAYS) {
    ctx.addIssue({
      code: 'custom',
      path: ['ANALYTICS_COMPRESS_AFTER_DAYS'],
      message: `must be less than ANALYTICS_RETENTION_DAYS (${value.ANALYTICS_RETENTION_DAYS})`,
    });
  }
  if (value.BACKUP_REPO_TYPE === 's3') {
    for (const name of ['BACKUP_S3_BUCKET', 'BACKUP_S3_ENDPOINT', 'BACKUP_S3_REGION'] as const) {
      if (value[name] === undefined)
        ctx.addIssue({ code: 'custom', path: [name], message: 'is required with BACKUP_REPO_TYPE=s3' });
    }
    if (
      value.BACKUP_S3_KEY_TYPE === 'shared' &&
      (value.BACKUP_S3_KEY === undefined || value.BACKUP_S3_KEY_SECRET === undefined)
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['BACKUP_S3_KEY'],
        message: 'BACKUP_S3_KEY_TYPE=shared needs BACKUP_S3_KEY and BACKUP_S3_KEY_SECRET',
      });
    }
    if (value.NODE_ENV === 'production' && value.BACKUP_CIPHER_PASS === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['BACKUP_CIPHER_PASS'],
        message:
          'is required with BACKUP_REPO_TYPE=s3 in production (the repository is encrypted client side)',
      });
    }
  }
  if (value.REDIS_WAIT_REPLICAS > 0) {
    if (value.REDIS_WAIT_TIMEOUT_MS * 2 > value.REDIS_DECISION_BUDGET_MS) {
      ctx.addIssue({
        code: 'custom',
        path: ['REDIS_WAIT_TIMEOUT_MS'],
        message: `must be at most half of REDIS_DECISION_BUDGET_MS (${value.REDIS_DECISION_BUDGET_MS})`,
      });
    }
    if (value.REDIS_WAIT_TIMEOUT_MS >= value.REDIS_COMMAND_TIMEOUT_MS) {
      ctx.addIssue({
        code: 'custom',
        path: ['REDIS_WAIT_TIMEOUT_MS'],
        message: `must be below REDIS_COMMAND_TIMEOUT_MS (${value.REDIS_COMMAND_TIMEOUT_MS})`,
      });
    }
  }
  const finality = chainFinalityBlocks(value.CHAIN_ID);
  const confirmations = value.CHAIN_CONFIRMATIONS ?? finality;
  if (value.NODE_ENV === 'production' && confirmations < finality) {
    ctx.addIssue({
      code: 'custom',
      path: ['CHAIN_CONFIRMATIONS'],
      message: `must be at least ${finality} (chain ${value.CHAIN_ID}'s finality depth) in production`,
    });
  }
  const reorgDepthMax = value.REORG_DEPTH_MAX ?? Math.max(64, finality);
  if (confirmations > reorgDepthMax) {
    ctx.addIssue({
      code: 'custom',
      path: [value.CHAIN_CONFIRMATIONS === undefined ? 'REORG_DEPTH_MAX' : 'CHAIN_CONFIRMATIONS'],
      message: `CHAIN_CONFIRMATIONS (${confirmations}) must not exceed REORG_DEPTH_MAX (${reorgDepthMax})`,
    });
  }
});

/** Defaults that depend on other settings (the chain's finality depth). */
const resolved = refined.transform((value) => {
  const finality = chainFinalityBlocks(value.CHAIN_ID);
  return {
    ...value,
    CHAIN_CONFIRMATIONS: value.CHAIN_CONFIRMATIONS ?? finality,
    REORG_DEPTH_MAX: value.REORG_DEPTH_MAX ?? Math.max(64, finality),
  };
});

export type Config = z.output<typeof resolved>;

/** Every variable the config reads (for checking .env.example). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(schema.shape);

export class ConfigError extends Error {
  readonly code = 'config_invalid';
  constructor(
    readonly variable: string,
    detail: string,
  ) {
    super(`config: ${variable} ${detail}`);
  }
}

/**
 * Parses an environment into a `Config`. Throws `ConfigError` naming the first bad variable.
 * The message carries zod's reason, never the value, so secrets cannot leak through it.
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  // Empty strings mean "unset", so `.env` files may list a variable without a value.
  const cleaned: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== '') cleaned[key] = value;
  }
  Object.assign(cleaned, secretsFromFiles(env, cleaned));
  const result = resolved.safeParse(cleaned);
  if (!result.success) {
    const issue = result.error.issues[0];
    const variable = String(issue?.path[0] ?? 'environment');
    const reason =
      cleaned[variable] === undefined && issue?.code !== 'custom'
        ? 'is required but not set'
        : `is invalid: ${issue?.message ?? 'bad value'}`;
    throw new ConfigError(variable, reason);
  }
  refusePublicSecrets(result.data, cleaned);
  return result.data;
}

/**
 * Every secret variable NAME may instead be given as NAME_FILE, the path of a file holding it (a
 * mounted Kubernetes or Docker secret, a file a secret manager's agent writes). The value is the
 * file's content, trimmed. Refused, with one line naming NAME_FILE and never the content: both NAME
 * and NAME_FILE set; a file that cannot be read, is not a regular file, is larger than
 * SECRET_FILE_BYTES_MAX, is empty, or that every user of the machine may read (mode o+r: chmod 600 or
 * 640, or a Kubernetes secret volume's defaultMode 0400/0440).
 */
function secretsFromFiles(
  env: Readonly<Record<string, string | undefined>>,
  given: Readonly<Record<string, string>>,
): Record<string, string> {
  const read: Record<string, string> = {};
  for (const name of SECRET_VARIABLES) {
    const variable = `${name}_FILE`;
    const file = env[variable];
    if (file === undefined || file === '') continue;
    const refuse = (detail: string) => new ConfigError(variable, `is invalid: ${detail}`);
    if (given[name] !== undefined) throw refuse(`set ${name} or ${variable}, not both`);
    let stat: ReturnType<typeof statSync>;
    try {
      stat = statSync(file);
    } catch (error) {
      throw refuse(`cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (!stat.isFile()) throw refuse(`${file} is not a regular file`);
    if ((stat.mode & 0o004) !== 0) {
      throw refuse(
        `${file} is readable by every user of the machine (mode ${(stat.mode & 0o777).toString(8)}); chmod o-rwx it`,
      );
    }
    if (stat.size > SECRET_FILE_BYTES_MAX)
      throw refuse(`${file} is larger than ${SECRET_FILE_BYTES_MAX} bytes`);
    let value: string;
    try {
      value = readFileSync(file, 'utf8').trim();
    } catch (error) {
      throw refuse(`cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (value === '') throw refuse(`${file} is empty`);
    read[name] = value;
  }
  return read;
}

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1 and localhost. */
export function isLoopbackHost(host: string): boolean {
  const bare = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '');
  return bare === 'localhost' || bare === '::1' || /^127(\.\d{1,3}){3}$/.test(bare);
}

/**
 * It is an invariant that a secret anyone can read in this repository is accepted only in explicit
 * local development: NODE_ENV set to `development` or `test` (unset means production) and every
 * address the process listens on — HOT_PATH_HOST, which the hot path and the ledger writer bind — a
 * loopback address. Throws one `ConfigError` naming the variable, never its value.
 */
function refusePublicSecrets(config: Config, given: Readonly<Record<string, string>>): void {
  const explicitDevelopment = given['NODE_ENV'] === 'development' || given['NODE_ENV'] === 'test';
  if (explicitDevelopment && isLoopbackHost(config.HOT_PATH_HOST)) return;
  const variable = publicSecretsInUse(config)[0];
  if (variable === undefined) return;
  const because = !explicitDevelopment
    ? given['NODE_ENV'] === undefined
      ? 'NODE_ENV is not set (unset means production)'
      : `NODE_ENV is ${config.NODE_ENV}`
    : 'HOT_PATH_HOST is not a loopback address';
  const what = given[variable] === undefined ? 'not set, and its default is' : 'invalid: it holds';
  throw new ConfigError(
    variable,
    `is ${what} a public secret written in the repository, refused because ${because}; set a secret of your own (public ones are accepted only with NODE_ENV=development or test and a loopback HOT_PATH_HOST)`,
  );
}

/**
 * The secret variables of `config` that hold a public secret (`PUBLIC_SECRETS`), for the loud warning
 * a service logs at start in local development. Names only, never values.
 */
export function publicSecretsInUse(config: Config): string[] {
  const candidates: [string, readonly (string | undefined)[]][] = [
    ['STRIPE_WEBHOOK_SECRETS', config.STRIPE_WEBHOOK_SECRETS],
    ['QSTASH_TOKEN', [config.QSTASH_TOKEN]],
    ['QSTASH_CURRENT_SIGNING_KEY', [config.QSTASH_CURRENT_SIGNING_KEY]],
    ['QSTASH_NEXT_SIGNING_KEY', [config.QSTASH_NEXT_SIGNING_KEY]],
    ['SUPABASE_JWT_SECRET', [config.SUPABASE_JWT_SECRET]],
    ['SUPABASE_SERVICE_ROLE_KEY', [config.SUPABASE_SERVICE_ROLE_KEY]],
    ['INTERNAL_API_TOKEN', [config.INTERNAL_API_TOKEN]],
    ['STRIPE_SECRET_KEY', [config.STRIPE_SECRET_KEY]],
  ];
  return candidates
    .filter(([, values]) => values.some((value) => value !== undefined && PUBLIC_SECRETS.has(value)))
    .map(([variable]) => variable);
}

/**
 * For service entry points: one loud warn line naming every variable that holds a public secret (the
 * config accepted it, so this is explicit development on loopback). Names only, never values.
 */
export function warnOfPublicSecrets(
  config: Config,
  logger: { warn(details: object, message: string): void },
): void {
  const variables = publicSecretsInUse(config);
  if (variables.length === 0) return;
  logger.warn(
    { variables, nodeEnv: config.NODE_ENV },
    `PUBLIC SECRET in ${variables.join(', ')}: anyone can sign what this process accepts; local development only`,
  );
}

export interface ConfigFromProcessOptions {
  /**
   * For tools that only ever run on a developer's machine (`npm run dev`, `npm run demo`, the
   * benchmarks): NODE_ENV=development when neither the environment nor `.env` sets it. Never for a
   * service or a job that is deployed — for those, unset means production.
   */
  localTool?: boolean;
}

/**
 * For process entry points: parse `process.env`, or print one line and exit with status 78 (EX_CONFIG).
 */
export function configFromProcess(
  overrides: Readonly<Record<string, string>> = {},
  options: ConfigFromProcessOptions = {},
): Config {
  // A local `.env` fills in what the real environment does not set (the environment wins).
  if (existsSync('.env')) process.loadEnvFile('.env');
  const fallback: Record<string, string> =
    options.localTool === true && (process.env['NODE_ENV'] ?? '') === '' ? { NODE_ENV: 'development' } : {};
  try {
    return loadConfig({ ...process.env, ...fallback, ...overrides });
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78);
    }
    throw error;
  }
}

/** Analytics reads go to their own connection, defaulting to the primary. */
export function analyticsDatabaseUrl(config: Config): string {
  return config.ANALYTICS_DATABASE_URL ?? config.DATABASE_URL;
}

/** How long the analytics store keeps history uncompressed and at all (reconciler/analytics/setup.ts). */
export function analyticsHistory(config: Config): { compressAfterDays: number; retentionDays: number } {
  return {
    compressAfterDays: config.ANALYTICS_COMPRESS_AFTER_DAYS,
    retentionDays: config.ANALYTICS_RETENTION_DAYS,
  };
}

/**
 * The services the test suite talks to: the machine's standard Postgres and Redis unless
 * TEST_DATABASE_URL / TEST_REDIS_URL say otherwise. TEST_DATABASE_ROUTE says how the services under
 * test reach Postgres: `pooled` (the default, and CI's) through a private PgBouncer the global setup
 * starts, each as its own role; `direct` straight to Postgres, still as their roles, for debugging a
 * test without the pooler in the way. Lives here because this module is the only reader of `process.env`.
 */
export function testServiceUrls(): {
  databaseUrl: string;
  redisUrl: string;
  redisMode: 'single' | 'cluster';
  redisClusterNodes: string[];
  databaseRoute: 'pooled' | 'direct';
} {
  const env = z
    .object({
      TEST_DATABASE_URL: url.default('postgres://postgres@127.0.0.1:5432/postgres'),
      TEST_REDIS_URL: url.default('redis://127.0.0.1:6379'),
      // `cluster`: the run starts a private six-node Redis Cluster (test/support/redis-cluster.ts)
      // and every test's shared Redis is that cluster.
      TEST_REDIS: z.enum(['single', 'cluster']).default('single'),
      // Set by the global setup for the run's cluster; not for people to set.
      TEST_REDIS_CLUSTER_NODES: schema.shape.REDIS_CLUSTER_NODES,
      TEST_DATABASE_ROUTE: z.enum(['pooled', 'direct']).default('pooled'),
    })
    .parse({
      TEST_DATABASE_URL: process.env['TEST_DATABASE_URL'] || undefined,
      TEST_REDIS_URL: process.env['TEST_REDIS_URL'] || undefined,
      TEST_REDIS: process.env['TEST_REDIS'] || undefined,
      TEST_REDIS_CLUSTER_NODES: process.env['TEST_REDIS_CLUSTER_NODES'] || undefined,
      TEST_DATABASE_ROUTE: process.env['TEST_DATABASE_ROUTE'] || undefined,
    });
  return {
    databaseUrl: env.TEST_DATABASE_URL,
    redisUrl: env.TEST_REDIS_URL,
    redisMode: env.TEST_REDIS,
    redisClusterNodes: env.TEST_REDIS_CLUSTER_NODES,
    databaseRoute: env.TEST_DATABASE_ROUTE,
  };
}
