// Proves the hot path and ledger writer processes refuse to start where money could be forged or lost, as real child processes (node + tsx, as the npm scripts start them, exactly the given environment): without NODE_ENV and with the repository's webhook secret the hot path exits 78 with one line naming STRIPE_WEBHOOK_SECRETS; in production, with a secret of their own, against a private redis-server without AOF both exit 78 with one line naming the problem; against a private durable redis-server the hot path starts and reports credana_redis_durability_ok 1; in explicit development on loopback it starts on the default secret with one loud warn line naming the variable. The shared Redis is never used.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_WEBHOOK_SECRET } from '../shared/config.ts';
import { adminUrl } from '../test/support/env.ts';
import { freePort, type RedisServer, startRedisServer } from '../test/support/processes.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
// A secret of our own, not written anywhere the config calls public.
const OWN_SECRET = `whsec_${'k7'.repeat(12)}`;
// If a process wrongly started, it would not reach this closed port either.
const UNREACHABLE_DB = 'postgres://postgres@127.0.0.1:1/never';
// Each child starts Node and tsx (a few seconds on a busy two-core machine).
const CHILD_TIMEOUT_MS = 90_000;

interface Outcome {
  /** Exit status, or 'ready' when the process printed its ready line (it was then stopped). */
  result: number | 'ready' | null;
  stdout: string;
  stderr: string;
  /** GET /metrics of the hot path while it was ready, when asked for. */
  metrics?: string;
}

/**
 * Starts `entry` with exactly `env` (plus PATH) and waits until it exits or prints `readyText`; a
 * started process is asked for `metricsUrl` (if given) and then stopped with SIGKILL.
 */
function run(
  entry: string,
  env: Record<string, string>,
  readyText: string,
  metricsUrl?: string,
): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    // `node --import tsx` runs the service in ONE process, so SIGKILL really stops it.
    const child = spawn(process.execPath, ['--import', 'tsx', entry], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'] ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let settled = false;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (settled || !stdout.includes(readyText)) return;
      settled = true;
      const asked = metricsUrl === undefined ? Promise.resolve(undefined) : fetchSoon(metricsUrl);
      void asked
        .then(
          (metrics) => ({ metrics }),
          (error: Error) => ({ metrics: `metrics request failed: ${error.message}` }),
        )
        .then(({ metrics }) => {
          child.once('close', () =>
            resolve({ result: 'ready', stdout, stderr, ...(metrics === undefined ? {} : { metrics }) }),
          );
          child.kill('SIGKILL');
        });
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (!settled) resolve({ result: code, stdout, stderr });
    });
  });
}

/** The ledger writer prints its ready line as it asks to listen: give the socket a moment. */
async function fetchSoon(url: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await (await fetch(url)).text();
    } catch (error) {
      if (attempt === 50) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

let volatile: RedisServer;
let durable: RedisServer;

beforeAll(async () => {
  // redis-server's own defaults: no AOF (and noeviction).
  volatile = await startRedisServer();
  durable = await startRedisServer([
    '--appendonly',
    'yes',
    '--appendfsync',
    'always',
    '--maxmemory-policy',
    'noeviction',
  ]);
});

afterAll(async () => {
  await volatile?.destroy();
  await durable?.destroy();
});

describe('hot-path/main.ts', () => {
  it(
    'exits 78 with one line naming STRIPE_WEBHOOK_SECRETS when started without NODE_ENV on the default secret',
    async () => {
      const outcome = await run(
        'hot-path/main.ts',
        {
          REDIS_URL: durable.url,
          DATABASE_URL: UNREACHABLE_DB,
          HOT_PATH_PORT: String(await freePort()),
          LOG_LEVEL: 'silent',
        },
        'hot-path ready',
      );
      expect(outcome.result, outcome.stdout + outcome.stderr).toBe(78);
      expect(outcome.stdout).toBe('');
      expect(outcome.stderr).toMatch(/^config: STRIPE_WEBHOOK_SECRETS [^\n]+\n$/);
      expect(outcome.stderr).toContain('NODE_ENV is not set (unset means production)');
      expect(outcome.stderr).not.toContain(DEV_WEBHOOK_SECRET);
    },
    CHILD_TIMEOUT_MS,
  );

  it(
    'exits 78 with one line in production on a Redis without AOF, never showing the secret',
    async () => {
      const outcome = await run(
        'hot-path/main.ts',
        {
          NODE_ENV: 'production',
          STRIPE_WEBHOOK_SECRETS: OWN_SECRET,
          REDIS_URL: volatile.url,
          DATABASE_URL: UNREACHABLE_DB,
          HOT_PATH_PORT: String(await freePort()),
          LOG_LEVEL: 'silent',
        },
        'hot-path ready',
      );
      expect(outcome.result, outcome.stdout + outcome.stderr).toBe(78);
      expect(outcome.stdout).toBe('');
      expect(outcome.stderr).toMatch(
        /^redis: REDIS_URL is not durable enough for money state \(read with CONFIG GET\): AOF is off \(appendonly no\)[^\n]*\(refused: NODE_ENV=production\)\n$/,
      );
      expect(outcome.stderr).not.toContain(OWN_SECRET);
    },
    CHILD_TIMEOUT_MS,
  );

  it(
    'starts in production on a durable Redis and reports credana_redis_durability_ok 1',
    async () => {
      const metricsPort = await freePort();
      const outcome = await run(
        'hot-path/main.ts',
        {
          NODE_ENV: 'production',
          STRIPE_WEBHOOK_SECRETS: OWN_SECRET,
          REDIS_URL: durable.url,
          DATABASE_URL: UNREACHABLE_DB,
          HOT_PATH_PORT: String(await freePort()),
          // Metrics are served on the internal listener only (the public port answers 404).
          HOT_PATH_METRICS_PORT: String(metricsPort),
          LOG_LEVEL: 'warn',
        },
        'hot-path ready',
        `http://127.0.0.1:${metricsPort}/metrics`,
      );
      expect(outcome.result, outcome.stdout + outcome.stderr).toBe('ready');
      expect(outcome.metrics).toContain('credana_redis_durability_ok{service="hot-path"} 1');
      expect(outcome.stdout + outcome.stderr).not.toContain('redis: REDIS_URL');
    },
    CHILD_TIMEOUT_MS,
  );
  it(
    'exits 78 with one line in production once Postgres answers as a superuser (it starts meanwhile)',
    async () => {
      const outcome = await run(
        'hot-path/main.ts',
        {
          NODE_ENV: 'production',
          STRIPE_WEBHOOK_SECRETS: OWN_SECRET,
          REDIS_URL: durable.url,
          // This machine's Postgres as its superuser: what a deployment without its own roles connects as.
          DATABASE_URL: adminUrl(),
          HOT_PATH_PORT: String(await freePort()),
          LOG_LEVEL: 'silent',
        },
        // Never printed: the run ends with the process's exit.
        'no such line',
      );
      expect(outcome.result, outcome.stdout + outcome.stderr).toBe(78);
      expect(outcome.stderr).toBe(
        'hot-path: connected to Postgres as postgres, a superuser; a service connects as its own role (docs/ledger.md) (refused: NODE_ENV=production)\n',
      );
    },
    CHILD_TIMEOUT_MS,
  );
  it(
    'starts in explicit development on loopback with the default secret, with one loud warn line',
    async () => {
      const outcome = await run(
        'hot-path/main.ts',
        {
          NODE_ENV: 'development',
          REDIS_URL: durable.url,
          DATABASE_URL: UNREACHABLE_DB,
          HOT_PATH_PORT: String(await freePort()),
          LOG_LEVEL: 'warn',
        },
        'hot-path ready',
      );
      expect(outcome.result, outcome.stdout + outcome.stderr).toBe('ready');
      const warnings = outcome.stdout.split('\n').filter((line) => line.includes('PUBLIC SECRET'));
      expect(warnings).toHaveLength(1);
      expect(JSON.parse(warnings[0] ?? '{}')).toMatchObject({
        level: 40,
        variables: ['STRIPE_WEBHOOK_SECRETS'],
        nodeEnv: 'development',
      });
      expect(outcome.stdout + outcome.stderr).not.toContain(DEV_WEBHOOK_SECRET);
    },
    CHILD_TIMEOUT_MS,
  );
});

describe('ledger-writer/main.ts', () => {
  it(
    'exits 78 with one line in production on a Redis without AOF',
    async () => {
      const outcome = await run(
        'ledger-writer/main.ts',
        {
          NODE_ENV: 'production',
          STRIPE_WEBHOOK_SECRETS: OWN_SECRET,
          REDIS_URL: volatile.url,
          DATABASE_URL: UNREACHABLE_DB,
          LEDGER_WRITER_PORT: String(await freePort()),
          LOG_LEVEL: 'silent',
        },
        'ledger-writer ready',
      );
      expect(outcome.result, outcome.stdout + outcome.stderr).toBe(78);
      expect(outcome.stderr).toMatch(/^redis: REDIS_URL is not durable enough [^\n]+\n$/);
    },
    CHILD_TIMEOUT_MS,
  );

  it(
    'runs under NODE_ENV=test on a Redis without AOF, with one warn line and the gauge at 0',
    async () => {
      const port = await freePort();
      const outcome = await run(
        'ledger-writer/main.ts',
        {
          NODE_ENV: 'test',
          REDIS_URL: volatile.url,
          DATABASE_URL: UNREACHABLE_DB,
          LEDGER_WRITER_PORT: String(port),
          LOG_LEVEL: 'warn',
        },
        'ledger-writer ready',
        `http://127.0.0.1:${port}/metrics`,
      );
      expect(outcome.result, outcome.stdout + outcome.stderr).toBe('ready');
      const warnings = outcome.stdout
        .split('\n')
        .filter((line) => line.includes('REDIS_URL is not durable enough'))
        .map((line) => JSON.parse(line) as { level: number; problems: string[] });
      expect(warnings).toHaveLength(1);
      expect(warnings[0]?.level).toBe(40);
      expect(warnings[0]?.problems).toEqual([
        'AOF is off (appendonly no), so a restart loses holds and outbox entries',
      ]);
      expect(outcome.metrics).toContain('credana_redis_durability_ok{service="ledger-writer"} 0');
    },
    CHILD_TIMEOUT_MS,
  );
});
