// Proves config parsing fails closed and quietly: loadConfig on explicit env objects (defaults, one-line errors naming the variable, no secret value in any error, unset NODE_ENV meaning production, raw chain keys refused in production in favour of HSM key labels, secrets read from <NAME>_FILE files (trimmed; refused when world-readable, missing, empty or given twice), every public secret of the repository refused outside explicit development on loopback, found by scanning the repository), and real child processes of the entry points exiting 78 with one stderr line and no secret.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { runScript, type ScriptResult } from '../test/support/processes.ts';
import {
  analyticsHistory,
  CHAIN_SIGNERS,
  ConfigError,
  DEV_WEBHOOK_SECRET,
  isLoopbackHost,
  loadConfig,
  PUBLIC_SECRETS,
  publicSecretsInUse,
  SECRET_VARIABLES,
  warnOfPublicSecrets,
} from './config.ts';

// Recognisable secret values: if any of them shows up in an error or an output, the test names it.
const CANARY = 'CANARY7f3a9c';
const STRIPE_SECRET_OK = `whsec_${CANARY}_live_signing_secret`;
const BAD_PRIVATE_KEY = `0x${CANARY}${'ab'.repeat(26)}`; // right length, not hex

function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error(`loadConfig accepted ${Object.keys(env).join(', ')}`);
}

/** Everything an error can show a log line or a crash report. */
function everythingShown(error: Error): string {
  return [
    error.message,
    String(error),
    error.stack ?? '',
    inspect(error, { depth: 10 }),
    JSON.stringify(error),
  ].join('\n');
}

describe('loadConfig', () => {
  it('parses an environment that only says development into the documented defaults', () => {
    const config = loadConfig({ NODE_ENV: 'development' });
    expect(config.NODE_ENV).toBe('development');
    expect(config.HOT_PATH_HOST).toBe('127.0.0.1');
    expect(config.REDIS_REQUIRED_APPENDFSYNC).toBe('always');
    expect(config.DATABASE_POOL_MAX).toBe(10);
    expect(config.DECISION_BUDGET_MS).toBe(400);
    expect(config.STRIPE_WEBHOOK_SECRETS).toEqual([DEV_WEBHOOK_SECRET]);
    expect(config.BLOCKED_MCCS).toEqual(['7995', '6051']);
    expect(config.CREDIT_LIMIT_CENTS_DEFAULT).toBe(2_500_000n);
    expect(config.HOLD_TTL_S).toBe(7 * 86_400);
    expect(config.METRICS_ENABLED).toBe(true);
    expect(config.SETTLER_PRIVATE_KEY).toBeUndefined();
  });

  it('parses given values, trims lists and treats an empty string as unset', () => {
    const config = loadConfig({
      NODE_ENV: 'test',
      DATABASE_POOL_MAX: '25',
      STRIPE_WEBHOOK_SECRETS: ` ${STRIPE_SECRET_OK} , whsec_second_secret_for_the_roll ,`,
      DAILY_LIMIT_CENTS_DEFAULT: '123456789012345678',
      METRICS_ENABLED: 'false',
      LOG_LEVEL: '',
      UNRELATED_VARIABLE: 'ignored',
    });
    expect(config.DATABASE_POOL_MAX).toBe(25);
    expect(config.STRIPE_WEBHOOK_SECRETS).toEqual([STRIPE_SECRET_OK, 'whsec_second_secret_for_the_roll']);
    expect(config.DAILY_LIMIT_CENTS_DEFAULT).toBe(123_456_789_012_345_678n);
    expect(config.METRICS_ENABLED).toBe(false);
    expect(config.LOG_LEVEL).toBe('info');
    expect(Object.hasOwn(config, 'UNRELATED_VARIABLE')).toBe(false);
  });

  it.each([
    ['DATABASE_URL', 'not a url'],
    ['DATABASE_POOL_MAX', '0'],
    ['DATABASE_POOL_MAX', 'ten'],
    ['HOT_PATH_PORT', '70000'],
    ['NODE_ENV', 'staging'],
    ['DECISION_BUDGET_MS', '2500'],
    ['BLOCKED_MCCS', '7995,79x5'],
    ['CREDIT_LIMIT_CENTS_DEFAULT', '-5'],
    ['METRICS_ENABLED', 'yes'],
    ['REDIS_KEY_PREFIX', 'has spaces'],
  ])('names %s in one line when it is %j', (variable, value) => {
    const error = configError({ [variable]: value });
    expect(error.variable).toBe(variable);
    expect(error.code).toBe('config_invalid');
    expect(error.message).toMatch(new RegExp(`^config: ${variable} is invalid: \\S`));
    expect(error.message).not.toContain('\n');
  });

  it.each([
    ['STRIPE_WEBHOOK_SECRETS', `${STRIPE_SECRET_OK},${CANARY}`], // the second secret is too short
    ['SETTLER_PRIVATE_KEY', BAD_PRIVATE_KEY],
    ['SETTLER_PRIVATE_KEY', `0x${CANARY}`],
    ['SUPABASE_JWT_SECRET', `jwt-${CANARY}`],
    ['INTERNAL_API_TOKEN', `t${CANARY}`],
  ])('never shows the value of secret %s, even when it is invalid', (variable, value) => {
    expect(SECRET_VARIABLES.has(variable)).toBe(true);
    const error = configError({ [variable]: value });
    expect(error.variable).toBe(variable);
    expect(error.message).toMatch(new RegExp(`^config: ${variable} is invalid: `));
    expect(everythingShown(error)).not.toContain(CANARY);
  });

  it('takes REDIS_CLUSTER_NODES as trimmed host:port seeds (empty: one Redis at REDIS_URL) and refuses anything else', () => {
    const dev = { NODE_ENV: 'development' };
    expect(loadConfig(dev).REDIS_CLUSTER_NODES).toEqual([]);
    expect(
      loadConfig({ ...dev, REDIS_CLUSTER_NODES: ' 10.0.0.1:7000, redis-2.internal:7001 ,' })
        .REDIS_CLUSTER_NODES,
    ).toEqual(['10.0.0.1:7000', 'redis-2.internal:7001']);
    for (const bad of ['10.0.0.1', 'redis://10.0.0.1:7000', '10.0.0.1:7000 10.0.0.2:7000']) {
      const error = configError({ ...dev, REDIS_CLUSTER_NODES: bad });
      expect(error.variable).toBe('REDIS_CLUSTER_NODES');
      expect(error.message).toMatch(/^config: REDIS_CLUSTER_NODES is invalid: .*host:port/);
    }
  });

  it('never shows the other secrets of the environment when one variable is bad', () => {
    const error = configError({
      STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
      QSTASH_TOKEN: `qstash-${CANARY}`,
      DATABASE_POOL_MAX: 'lots',
    });
    expect(error.variable).toBe('DATABASE_POOL_MAX');
    expect(everythingShown(error)).not.toContain(CANARY);
  });

  it('refuses a deployment without NODE_ENV: unset means production, and the default secret is public', () => {
    const error = configError({});
    expect(error.variable).toBe('STRIPE_WEBHOOK_SECRETS');
    expect(error.message).toBe(
      'config: STRIPE_WEBHOOK_SECRETS is not set, and its default is a public secret written in the repository, refused because NODE_ENV is not set (unset means production); set a secret of your own (public ones are accepted only with NODE_ENV=development or test and a loopback HOT_PATH_HOST)',
    );
    // The same with the development secret written out, as a copied .env.example would.
    const written = configError({ STRIPE_WEBHOOK_SECRETS: DEV_WEBHOOK_SECRET, HOT_PATH_HOST: '127.0.0.1' });
    expect(written.message).toMatch(
      /^config: STRIPE_WEBHOOK_SECRETS is invalid: it holds a public secret written in the repository, refused because NODE_ENV is not set \(unset means production\); [^\n]+$/,
    );
    expect(everythingShown(written)).not.toContain(DEV_WEBHOOK_SECRET);
    // With a secret of its own, a deployment without NODE_ENV runs as production.
    expect(loadConfig({ STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK }).NODE_ENV).toBe('production');
  });

  const secretVariables = [
    'STRIPE_WEBHOOK_SECRETS',
    'QSTASH_TOKEN',
    'QSTASH_CURRENT_SIGNING_KEY',
    'QSTASH_NEXT_SIGNING_KEY',
    'SUPABASE_JWT_SECRET',
    'SUPABASE_SERVICE_ROLE_KEY',
    'INTERNAL_API_TOKEN',
  ];
  const publicCases = secretVariables.flatMap((variable) =>
    [...PUBLIC_SECRETS]
      // SUPABASE_JWT_SECRET needs 32 characters, INTERNAL_API_TOKEN 16: shorter ones fail earlier.
      .filter((secret) => variable !== 'SUPABASE_JWT_SECRET' || secret.length >= 32)
      .map((secret) => [variable, secret] as const),
  );

  it.each(['production', undefined])(
    'refuses every public secret of the repository in every secret variable with NODE_ENV=%s, never showing it',
    (nodeEnv) => {
      for (const [variable, secret] of publicCases) {
        const env: Record<string, string | undefined> = {
          NODE_ENV: nodeEnv,
          STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
          [variable]: variable === 'STRIPE_WEBHOOK_SECRETS' ? `${STRIPE_SECRET_OK},${secret}` : secret,
        };
        const error = configError(env);
        expect(error.variable, `${variable} = a public secret`).toBe(variable);
        expect(error.message).toMatch(
          new RegExp(`^config: ${variable} is invalid: it holds a public secret`),
        );
        expect(error.message).not.toContain('\n');
        expect(everythingShown(error)).not.toContain(secret);
        expect(everythingShown(error)).not.toContain(CANARY);
      }
    },
  );

  it.each(['0.0.0.0', '::', '10.0.0.5', 'credana.example.com', '128.0.0.1'])(
    'refuses a public secret in explicit development when HOT_PATH_HOST is %s',
    (host) => {
      for (const nodeEnv of ['development', 'test']) {
        const error = configError({ NODE_ENV: nodeEnv, HOT_PATH_HOST: host });
        expect(error.variable).toBe('STRIPE_WEBHOOK_SECRETS');
        expect(error.message).toContain('refused because HOT_PATH_HOST is not a loopback address');
      }
      // A secret of its own may listen anywhere.
      expect(
        loadConfig({ NODE_ENV: 'development', HOT_PATH_HOST: host, STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK })
          .HOT_PATH_HOST,
      ).toBe(host);
    },
  );

  it.each(['127.0.0.1', '127.8.9.10', 'localhost', '::1', '[::1]'])(
    'accepts the public secrets in explicit development and test when HOT_PATH_HOST is %s',
    (host) => {
      expect(isLoopbackHost(host)).toBe(true);
      for (const nodeEnv of ['development', 'test'] as const) {
        const config = loadConfig({ NODE_ENV: nodeEnv, HOT_PATH_HOST: host });
        expect(config.STRIPE_WEBHOOK_SECRETS).toEqual([DEV_WEBHOOK_SECRET]);
        expect(config.NODE_ENV).toBe(nodeEnv);
      }
      const keys = {
        QUEUE_DRIVER: 'qstash',
        QSTASH_TOKEN: 'sig_current_signing_key_for_tests_01',
        QSTASH_CURRENT_SIGNING_KEY: 'sig_current_signing_key_for_tests_01',
        QSTASH_NEXT_SIGNING_KEY: 'sig_next_signing_key_for_tests_0002',
      };
      expect(loadConfig({ NODE_ENV: 'test', HOT_PATH_HOST: host, ...keys }).QUEUE_DRIVER).toBe('qstash');
    },
  );

  it('warns loudly, naming variables and never values, when explicit development runs on public secrets', () => {
    const config = loadConfig({
      NODE_ENV: 'development',
      INTERNAL_API_TOKEN: 'whsec_bench_secret_not_for_production_0001',
    });
    expect(publicSecretsInUse(config)).toEqual(['STRIPE_WEBHOOK_SECRETS', 'INTERNAL_API_TOKEN']);
    const warnings: { details: object; message: string }[] = [];
    warnOfPublicSecrets(config, { warn: (details, message) => warnings.push({ details, message }) });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.message).toMatch(/^PUBLIC SECRET in STRIPE_WEBHOOK_SECRETS, INTERNAL_API_TOKEN: /);
    expect(JSON.stringify(warnings)).not.toContain(DEV_WEBHOOK_SECRET);
    expect(JSON.stringify(warnings)).not.toContain('whsec_bench');

    const own = loadConfig({ NODE_ENV: 'development', STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK });
    warnOfPublicSecrets(own, { warn: (details, message) => warnings.push({ details, message }) });
    expect(warnings).toHaveLength(1);
  });

  it('lists every secret-looking literal written in the repository as public', () => {
    const root = path.resolve(import.meta.dirname, '..');
    const files = execFileSync('git', ['ls-files'], { cwd: root, encoding: 'utf8' })
      .split('\n')
      .filter(
        (file) => /\.(ts|js|cjs|md|json|toml|sql|example)$/.test(file) || file.endsWith('.env.example'),
      );
    // Stripe webhook secrets and API keys, QStash signing keys, and the Supabase CLI's local JWT secret.
    const literal =
      /\b(?:whsec_[A-Za-z0-9_]{16,}|[sr]k_(?:test|live)_[A-Za-z0-9_]{16,}|sig_[A-Za-z0-9_]{16,}|super-secret-jwt-token-[a-z0-9-]{8,})/g;
    const found = new Map<string, string>();
    for (const file of files) {
      let text: string;
      try {
        text = readFileSync(path.join(root, file), 'utf8');
      } catch {
        continue; // deleted in the working tree
      }
      for (const match of text.matchAll(literal)) found.set(match[0], file);
    }
    expect(found.size).toBeGreaterThan(3);
    const unlisted = [...found].filter(([secret]) => !PUBLIC_SECRETS.has(secret));
    expect(unlisted, 'secrets written in these files are missing from PUBLIC_SECRETS').toEqual([]);
  });

  it('refuses a test-mode Stripe API key in production, and a value that is no Stripe key anywhere', () => {
    const liveLooking = `sk_live_${CANARY}_reconciliation_key`;
    expect(
      loadConfig({
        NODE_ENV: 'production',
        STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
        STRIPE_SECRET_KEY: liveLooking,
      }).STRIPE_SECRET_KEY,
    ).toBe(liveLooking);
    const testKey = `rk_test_${CANARY}_reconciliation_key`;
    const error = configError({
      NODE_ENV: 'production',
      STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
      STRIPE_SECRET_KEY: testKey,
    });
    expect(error.message).toBe(
      'config: STRIPE_SECRET_KEY is invalid: a test-mode key (sk_test_/rk_test_) is refused in production',
    );
    expect(loadConfig({ NODE_ENV: 'test', STRIPE_SECRET_KEY: testKey }).STRIPE_SECRET_KEY).toBe(testKey);
    const bad = configError({ NODE_ENV: 'test', STRIPE_SECRET_KEY: `pk_live_${CANARY}_publishable_key` });
    expect(bad.message).toMatch(
      /^config: STRIPE_SECRET_KEY is invalid: must be a Stripe secret or restricted key/,
    );
    expect(bad.message).not.toContain(CANARY);
  });

  it('refuses every raw chain key in production (keys live in the HSM there), and accepts one in development and test', () => {
    const publicKey = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80'; // Hardhat #0
    const ownKey = `0x${'1f'.repeat(32)}`;
    for (const { privateKey: name, keyLabel } of Object.values(CHAIN_SIGNERS)) {
      for (const key of [publicKey, ownKey]) {
        const error = configError({
          NODE_ENV: 'production',
          STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
          [name]: key,
        });
        expect(error.message).toBe(
          `config: ${name} is invalid: a raw private key is refused in production; keep the key in the HSM and name it with ${keyLabel} (docs/operations.md)`,
        );
        expect(everythingShown(error)).not.toContain(key.slice(2));
        expect(loadConfig({ NODE_ENV: 'test', [name]: key })[name]).toBe(key);
      }
    }
  });

  it('takes a chain signer as a key label in the HSM, which needs the module, the token and a PIN', () => {
    const hsm = {
      PKCS11_MODULE: '/usr/lib/softhsm/libsofthsm2.so',
      PKCS11_TOKEN_LABEL: 'credana',
      PKCS11_PIN: `pin-${CANARY}`,
    };
    const production = { NODE_ENV: 'production', STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK };
    const config = loadConfig({ ...production, ...hsm, SETTLER_KEY_LABEL: 'settler-2026' });
    expect([config.SETTLER_KEY_LABEL, config.PKCS11_TOKEN_LABEL, config.SETTLER_PRIVATE_KEY]).toEqual([
      'settler-2026',
      'credana',
      undefined,
    ]);
    for (const missing of ['PKCS11_MODULE', 'PKCS11_TOKEN_LABEL', 'PKCS11_PIN'] as const) {
      const { [missing]: _dropped, ...rest } = hsm;
      const error = configError({ ...production, ...rest, LIQUIDATOR_KEY_LABEL: 'liquidator' });
      expect(error.message).toBe(
        `config: ${missing} is invalid: must be set when LIQUIDATOR_KEY_LABEL names a key in the HSM`,
      );
      expect(everythingShown(error)).not.toContain(CANARY);
    }
    const both = configError({
      NODE_ENV: 'test',
      ...hsm,
      WITHDRAWAL_SIGNER_KEY_LABEL: 'signer',
      WITHDRAWAL_SIGNER_PRIVATE_KEY: `0x${'2e'.repeat(32)}`,
    });
    expect(both.message).toBe(
      'config: WITHDRAWAL_SIGNER_KEY_LABEL is invalid: set WITHDRAWAL_SIGNER_PRIVATE_KEY or WITHDRAWAL_SIGNER_KEY_LABEL, not both',
    );
    expect(configError({ NODE_ENV: 'test', SETTLER_KEY_LABEL: 'has space' }).variable).toBe(
      'SETTLER_KEY_LABEL',
    );
    expect(SECRET_VARIABLES.has('PKCS11_PIN')).toBe(true);
  });

  it('requires the QStash token and both signing keys when QStash is the queue', () => {
    const error = configError({ NODE_ENV: 'test', QUEUE_DRIVER: 'qstash', QSTASH_TOKEN: `tok-${CANARY}` });
    expect(error.variable).toBe('QSTASH_TOKEN');
    expect(everythingShown(error)).not.toContain(CANARY);
    const keys = { QSTASH_TOKEN: 'a', QSTASH_CURRENT_SIGNING_KEY: 'b', QSTASH_NEXT_SIGNING_KEY: 'c' };
    expect(loadConfig({ NODE_ENV: 'test', QUEUE_DRIVER: 'qstash', ...keys }).QUEUE_DRIVER).toBe('qstash');
  });
});

/** Runs an entry point the way npm scripts start it, with exactly `env` (test/support/processes.ts). */
function runEntryPoint(script: string, env: Record<string, string>): Promise<ScriptResult> {
  return runScript(script, [], env);
}

// Each child starts Node and tsx (a few seconds on a busy two-core machine).
const CHILD_TIMEOUT_MS = 90_000;

describe('secrets from files (<NAME>_FILE)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'credana-secret-files-'));
  let files = 0;
  const secretFile = (content: string, mode = 0o600): string => {
    const file = path.join(dir, `secret-${files++}`);
    writeFileSync(file, content);
    chmodSync(file, mode);
    return file;
  };

  it('reads every secret variable from its file, trimmed, as if it were set', () => {
    const pin = `pin-${CANARY}`;
    const config = loadConfig({
      NODE_ENV: 'test',
      STRIPE_WEBHOOK_SECRETS_FILE: secretFile(`  ${STRIPE_SECRET_OK} , whsec_second_secret_for_the_roll\n`),
      PKCS11_PIN_FILE: secretFile(`${pin}\n`, 0o640),
      INTERNAL_API_TOKEN_FILE: secretFile(`token-${CANARY}-long-enough`, 0o400),
    });
    expect(config.STRIPE_WEBHOOK_SECRETS).toEqual([STRIPE_SECRET_OK, 'whsec_second_secret_for_the_roll']);
    expect(config.PKCS11_PIN).toBe(pin);
    expect(config.INTERNAL_API_TOKEN).toBe(`token-${CANARY}-long-enough`);
    expect(Object.hasOwn(config, 'PKCS11_PIN_FILE')).toBe(false);
    for (const variable of SECRET_VARIABLES) {
      expect(loadConfig({ NODE_ENV: 'test', [`${variable}_FILE`]: '' })).toBeDefined(); // empty = unset
    }
  });

  it.each([
    ['is readable by every user of the machine', () => secretFile(`whsec_${CANARY}_world_readable`, 0o644)],
    ['is empty', () => secretFile(' \n\t')],
    ['cannot read', () => path.join(dir, 'missing')],
    [
      'is not a regular file',
      () => {
        const sub = path.join(dir, `folder-${files++}`);
        mkdirSync(sub);
        return sub;
      },
    ],
    ['is larger than 65536 bytes', () => secretFile(`whsec_${CANARY}`.padEnd(70_000, 'x'))],
  ])('refuses a file that %s, in one line naming the variable and never the content', (reason, file) => {
    const error = configError({ NODE_ENV: 'test', STRIPE_WEBHOOK_SECRETS_FILE: file() });
    expect(error.variable).toBe('STRIPE_WEBHOOK_SECRETS_FILE');
    expect(error.message).toMatch(/^config: STRIPE_WEBHOOK_SECRETS_FILE is invalid: [^\n]+$/);
    expect(error.message).toContain(reason);
    expect(everythingShown(error)).not.toContain(CANARY);
  });

  it('refuses a variable given both ways, an invalid value from a file without showing it, and a public secret from a file in production', () => {
    const both = configError({
      NODE_ENV: 'test',
      QSTASH_TOKEN: 'one',
      QSTASH_TOKEN_FILE: secretFile('two'),
    });
    expect(both.message).toBe(
      'config: QSTASH_TOKEN_FILE is invalid: set QSTASH_TOKEN or QSTASH_TOKEN_FILE, not both',
    );
    const short = configError({ NODE_ENV: 'test', SUPABASE_JWT_SECRET_FILE: secretFile(`j${CANARY}`) });
    expect(short.variable).toBe('SUPABASE_JWT_SECRET');
    expect(everythingShown(short)).not.toContain(CANARY);
    const publicOne = configError({
      NODE_ENV: 'production',
      STRIPE_WEBHOOK_SECRETS_FILE: secretFile(DEV_WEBHOOK_SECRET),
    });
    expect(publicOne.message).toMatch(/^config: STRIPE_WEBHOOK_SECRETS is invalid: it holds a public secret/);
    // A raw chain key from a file is still a raw key: refused in production.
    const key = configError({
      NODE_ENV: 'production',
      STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
      SETTLER_PRIVATE_KEY_FILE: secretFile(`0x${'3c'.repeat(32)}`),
    });
    expect(key.variable).toBe('SETTLER_PRIVATE_KEY');
    expect(everythingShown(key)).not.toContain('3c3c3c');
  });

  it(
    'stops an entry point with exit 78 and one line when a secret file is world-readable',
    async () => {
      const result = await runEntryPoint('scripts/db-migrate.ts', {
        NODE_ENV: 'test',
        DATABASE_URL: 'postgres://postgres@127.0.0.1:1/never',
        INTERNAL_API_TOKEN_FILE: secretFile(`token-${CANARY}-long-enough`, 0o644),
      });
      expect(result.code).toBe(78);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(
        /^config: INTERNAL_API_TOKEN_FILE is invalid: \S[^\n]+readable by every user[^\n]+\n$/,
      );
      expect(result.stderr).not.toContain(CANARY);
    },
    CHILD_TIMEOUT_MS,
  );
});

describe('entry points with a bad environment', () => {
  // If parsing wrongly succeeded, the scripts would try this closed port and fail differently (exit 1).
  const UNREACHABLE_DB = 'postgres://postgres@127.0.0.1:1/never';

  it.each([
    ['scripts/db-migrate.ts', 'SETTLER_PRIVATE_KEY', BAD_PRIVATE_KEY],
    ['scripts/db-migrate.ts', 'STRIPE_WEBHOOK_SECRETS', `${STRIPE_SECRET_OK},${CANARY}`],
    ['scripts/db-partitions.ts', 'SUPABASE_JWT_SECRET', `jwt-${CANARY}`],
  ])(
    '%s exits 78 with one stderr line naming %s and no secret',
    async (script, variable, value) => {
      const result = await runEntryPoint(script, {
        DATABASE_URL: UNREACHABLE_DB,
        QSTASH_TOKEN: `qstash-${CANARY}`,
        [variable]: value,
      });
      expect(result.code).toBe(78);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(new RegExp(`^config: ${variable} is invalid: [^\\n]+\\n$`));
      expect(result.stdout + result.stderr).not.toContain(CANARY);
    },
    CHILD_TIMEOUT_MS,
  );

  it.each([
    ['without NODE_ENV', {}],
    ['in production', { NODE_ENV: 'production' }],
  ])(
    'refuses to start %s with the development webhook secret',
    async (_when, nodeEnv) => {
      const result = await runEntryPoint('scripts/db-migrate.ts', {
        DATABASE_URL: UNREACHABLE_DB,
        ...nodeEnv,
      });
      expect(result.code).toBe(78);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(
        /^config: STRIPE_WEBHOOK_SECRETS is not set, and its default is a public secret written in the repository, refused because NODE_ENV is [^\n]+\n$/,
      );
      expect(result.stdout + result.stderr).not.toContain(DEV_WEBHOOK_SECRET);
    },
    CHILD_TIMEOUT_MS,
  );
});

describe('chain confirmations', () => {
  const production = { NODE_ENV: 'production', STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK };
  const dev = { NODE_ENV: 'development' };

  it("default to the chain's finality depth (1 on the local chain), with a reorg window to match", () => {
    expect(loadConfig(dev).CHAIN_CONFIRMATIONS).toBe(1);
    expect(loadConfig({ ...dev, CHAIN_ID: '1' })).toMatchObject({
      CHAIN_CONFIRMATIONS: 65,
      REORG_DEPTH_MAX: 65,
    });
    expect(loadConfig({ ...dev, CHAIN_ID: '42161' })).toMatchObject({
      CHAIN_CONFIRMATIONS: 240,
      REORG_DEPTH_MAX: 240,
    });
    expect(loadConfig({ ...dev, CHAIN_CONFIRMATIONS: '0' }).CHAIN_CONFIRMATIONS).toBe(0); // dev and tests may choose
  });

  it('refuses fewer than the finality depth in production, with one line naming the variable', () => {
    const error = configError({ ...production, CHAIN_ID: '1', CHAIN_CONFIRMATIONS: '2' });
    expect(error.message).toBe(
      "config: CHAIN_CONFIRMATIONS is invalid: must be at least 65 (chain 1's finality depth) in production",
    );
    expect(loadConfig({ ...production, CHAIN_ID: '1' }).CHAIN_CONFIRMATIONS).toBe(65);
    expect(configError({ ...dev, CHAIN_CONFIRMATIONS: '100', REORG_DEPTH_MAX: '64' }).variable).toBe(
      'CHAIN_CONFIRMATIONS',
    );
  });
  it('refuses an analytics compression age that is not below the retention, with one line', () => {
    expect(
      configError({ ...dev, ANALYTICS_COMPRESS_AFTER_DAYS: '30', ANALYTICS_RETENTION_DAYS: '30' }).message,
    ).toBe(
      'config: ANALYTICS_COMPRESS_AFTER_DAYS is invalid: must be less than ANALYTICS_RETENTION_DAYS (30)',
    );
    const config = loadConfig({ ...dev, ANALYTICS_COMPRESS_AFTER_DAYS: '7', ANALYTICS_RETENTION_DAYS: '90' });
    expect(analyticsHistory(config)).toEqual({ compressAfterDays: 7, retentionDays: 90 });
    expect(analyticsHistory(loadConfig(dev))).toEqual({ compressAfterDays: 30, retentionDays: 730 });
  });
  it('keeps the replica WAIT inside the Redis budget and below the command timeout, and off by default', () => {
    expect(loadConfig(dev)).toMatchObject({ REDIS_WAIT_REPLICAS: 0, REDIS_WAIT_TIMEOUT_MS: 50 });
    expect(
      configError({
        ...dev,
        REDIS_WAIT_REPLICAS: '1',
        REDIS_WAIT_TIMEOUT_MS: '126',
        REDIS_DECISION_BUDGET_MS: '250',
      }).message,
    ).toBe(
      'config: REDIS_WAIT_TIMEOUT_MS is invalid: must be at most half of REDIS_DECISION_BUDGET_MS (250)',
    );
    expect(
      configError({
        ...dev,
        REDIS_WAIT_REPLICAS: '1',
        REDIS_WAIT_TIMEOUT_MS: '100',
        REDIS_COMMAND_TIMEOUT_MS: '100',
      }).message,
    ).toBe('config: REDIS_WAIT_TIMEOUT_MS is invalid: must be below REDIS_COMMAND_TIMEOUT_MS (100)');
    expect(configError({ ...dev, REDIS_WAIT_REPLICAS: '-1' }).message).toMatch(
      /^config: REDIS_WAIT_REPLICAS is invalid/,
    );
    // Off, the timeout is not used and not held to the budget.
    expect(loadConfig({ ...dev, REDIS_WAIT_TIMEOUT_MS: '900' }).REDIS_WAIT_TIMEOUT_MS).toBe(900);
    expect(loadConfig({ ...dev, REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: '125' })).toMatchObject({
      REDIS_WAIT_REPLICAS: 1,
      REDIS_WAIT_TIMEOUT_MS: 125,
    });
  });
});
