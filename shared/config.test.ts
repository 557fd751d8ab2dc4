// Proves config parsing fails closed and quietly: loadConfig on explicit env objects (defaults, one-line errors naming the variable, no secret value in any error, production refusals), and real child processes of the entry points exiting 78 with one stderr line and no secret.
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { runScript, type ScriptResult } from '../test/support/processes.ts';
import { ConfigError, DEV_WEBHOOK_SECRET, loadConfig, SECRET_VARIABLES } from './config.ts';

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
  it('parses an empty environment into the documented defaults', () => {
    const config = loadConfig({});
    expect(config.NODE_ENV).toBe('development');
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

  it('never shows the other secrets of the environment when one variable is bad', () => {
    const error = configError({
      STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
      QSTASH_TOKEN: `qstash-${CANARY}`,
      DATABASE_POOL_MAX: 'lots',
    });
    expect(error.variable).toBe('DATABASE_POOL_MAX');
    expect(everythingShown(error)).not.toContain(CANARY);
  });

  it('refuses the local development webhook secret in production, alone or beside a real one', () => {
    for (const secrets of [undefined, DEV_WEBHOOK_SECRET, `${STRIPE_SECRET_OK},${DEV_WEBHOOK_SECRET}`]) {
      const error = configError({ NODE_ENV: 'production', STRIPE_WEBHOOK_SECRETS: secrets });
      expect(error.variable).toBe('STRIPE_WEBHOOK_SECRETS');
      expect(error.message).toBe(
        'config: STRIPE_WEBHOOK_SECRETS is invalid: the local development secret is refused in production',
      );
      expect(everythingShown(error)).not.toContain(CANARY);
    }
    // A real secret is accepted in production, and the dev secret outside it.
    expect(loadConfig({ NODE_ENV: 'production', STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK }).NODE_ENV).toBe(
      'production',
    );
    expect(loadConfig({ NODE_ENV: 'test', STRIPE_WEBHOOK_SECRETS: DEV_WEBHOOK_SECRET }).NODE_ENV).toBe(
      'test',
    );
  });

  it('refuses keys of the public test mnemonic as chain keys in production', () => {
    const publicKey = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80'; // Hardhat #0
    for (const name of ['SETTLER_PRIVATE_KEY', 'WITHDRAWAL_SIGNER_PRIVATE_KEY', 'LIQUIDATOR_PRIVATE_KEY']) {
      const error = configError({
        NODE_ENV: 'production',
        STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
        [name]: publicKey,
      });
      expect(error.message).toBe(`config: ${name} is invalid: a public test key is refused in production`);
      expect(everythingShown(error)).not.toContain(publicKey.slice(2));
      expect(loadConfig({ NODE_ENV: 'test', [name]: publicKey })[name as 'SETTLER_PRIVATE_KEY']).toBe(
        publicKey,
      );
    }
    const privateKey = `0x${'1f'.repeat(32)}`;
    expect(
      loadConfig({
        NODE_ENV: 'production',
        STRIPE_WEBHOOK_SECRETS: STRIPE_SECRET_OK,
        WITHDRAWAL_SIGNER_PRIVATE_KEY: privateKey,
      }).WITHDRAWAL_SIGNER_PRIVATE_KEY,
    ).toBe(privateKey);
  });

  it('requires the QStash token and both signing keys when QStash is the queue', () => {
    const error = configError({ QUEUE_DRIVER: 'qstash', QSTASH_TOKEN: `tok-${CANARY}` });
    expect(error.variable).toBe('QSTASH_TOKEN');
    expect(everythingShown(error)).not.toContain(CANARY);
    const keys = { QSTASH_TOKEN: 'a', QSTASH_CURRENT_SIGNING_KEY: 'b', QSTASH_NEXT_SIGNING_KEY: 'c' };
    expect(loadConfig({ QUEUE_DRIVER: 'qstash', ...keys }).QUEUE_DRIVER).toBe('qstash');
  });
});

/** Runs an entry point the way npm scripts start it, with exactly `env` (test/support/processes.ts). */
function runEntryPoint(script: string, env: Record<string, string>): Promise<ScriptResult> {
  return runScript(script, [], env);
}

// Each child starts Node and tsx (a few seconds on a busy two-core machine).
const CHILD_TIMEOUT_MS = 90_000;

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

  it(
    'refuses to start in production with the development webhook secret',
    async () => {
      const result = await runEntryPoint('scripts/db-migrate.ts', {
        DATABASE_URL: UNREACHABLE_DB,
        NODE_ENV: 'production',
      });
      expect(result.code).toBe(78);
      expect(result.stderr).toBe(
        'config: STRIPE_WEBHOOK_SECRETS is invalid: the local development secret is refused in production\n',
      );
      expect(result.stdout + result.stderr).not.toContain(DEV_WEBHOOK_SECRET);
    },
    CHILD_TIMEOUT_MS,
  );
});
