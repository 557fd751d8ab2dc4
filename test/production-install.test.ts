// Slow on purpose (npm ci from the registry, 30–90 s): proves a production install works — `npm ci --omit=dev` of this package.json/lock in a temp copy of the repository installs no dev tool yet carries tsx and the patched postgres.js driver, and `npm run start:hot-path` from it answers /healthz (metrics only on its internal port); and that every service entry point imports only packages listed in "dependencies".
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisEnv, setUpServices, type TestServices } from './support/db.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
// npm ci downloads every production package (no cache is assumed) on a busy two-core machine.
const INSTALL_TIMEOUT_MS = 240_000;
const START_TIMEOUT_MS = 60_000;
const packageJson = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

// vitest puts this repository's node_modules/.bin on PATH: without it, a tool missing from the production
// install (tsx, patch-package) is really missing.
const PATH = (process.env['PATH'] ?? '')
  .split(path.delimiter)
  .filter((entry) => !entry.includes('node_modules'))
  .join(path.delimiter);

/** The npm scripts that run in production, and the entry file each starts with tsx. */
function serviceEntries(): [string, string][] {
  const production =
    /^(start:|db:migrate$|db:partitions$|reconcile$|report$|scheduler$|cache:warm$|ops$|backup$|restore$)/;
  return Object.entries(packageJson.scripts)
    .filter(([name]) => production.test(name))
    .map(([name, command]) => {
      const entry = /^tsx (\S+\.ts)$/.exec(command)?.[1];
      if (entry === undefined) throw new Error(`${name}: expected "tsx <file>.ts", got "${command}"`);
      return [name, entry];
    });
}

/** Every package imported at run time (type-only imports are erased) from `entry`, following relative imports. */
function runtimePackages(entry: string): Map<string, string> {
  const found = new Map<string, string>(); // package → first file importing it
  const seen = new Set<string>();
  const queue = [path.join(ROOT, entry)];
  const importPattern =
    /(?:^|[\s;])(?:import|export)\s+(type\s+)?(?:[^'";]*?\sfrom\s+)?'([^']+)'|import\(\s*'([^']+)'\s*\)/g;
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    for (const match of source.matchAll(importPattern)) {
      if (match[1] !== undefined) continue;
      const specifier = match[2] ?? match[3] ?? '';
      if (specifier.startsWith('.')) {
        queue.push(path.resolve(path.dirname(file), specifier));
        continue;
      }
      if (specifier.startsWith('node:') || builtinModules.includes(specifier)) continue;
      const parts = specifier.split('/');
      const name = specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] ?? specifier);
      if (!found.has(name)) found.set(name, path.relative(ROOT, file));
    }
  }
  return found;
}

describe('service entry points', () => {
  it.each(serviceEntries())('%s (%s) imports only production dependencies', (_name, entry) => {
    const packages = runtimePackages(entry);
    expect(packages.size).toBeGreaterThan(0);
    const missing = [...packages].filter(([name]) => !(name in packageJson.dependencies));
    expect(missing).toEqual([]);
  });

  it('runs every production script with tsx, which is a production dependency, as is patch-package', () => {
    expect(packageJson.dependencies).toHaveProperty('tsx');
    // postinstall runs patch-package: the postgres.js patch is a run-time fix (shared/db/driver-patch.test.ts).
    expect(packageJson.scripts['postinstall']).toBe('patch-package');
    expect(packageJson.dependencies).toHaveProperty('patch-package');
  });
});

describe('npm ci --omit=dev', () => {
  let dir: string;
  let services: TestServices;
  let child: ChildProcess | null = null;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'credana-prod-'));
    for (const entry of [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'patches',
      'hot-path',
      'shared',
    ])
      cpSync(path.join(ROOT, entry), path.join(dir, entry), {
        recursive: true,
        filter: (source) => !source.includes(`${path.sep}node_modules`),
      });
    services = await setUpServices();
    await new Promise<void>((resolve, reject) => {
      execFile(
        'npm',
        ['ci', '--omit=dev', '--no-audit', '--no-fund'],
        { cwd: dir, timeout: INSTALL_TIMEOUT_MS, env: { ...process.env, PATH, NODE_ENV: 'production' } },
        (error, stdout, stderr) =>
          error === null
            ? resolve()
            : reject(new Error(`npm ci failed: ${error.message}\n${stdout}${stderr}`)),
      );
    });
  }, INSTALL_TIMEOUT_MS + 30_000);

  afterAll(async () => {
    // npm runs the service under sh and tsx: stop the whole process group this test started.
    if (child?.pid !== undefined && child.exitCode === null) {
      const exited = new Promise((resolve) => child?.once('exit', resolve));
      process.kill(-child.pid, 'SIGKILL');
      await exited;
    }
    await services?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('installs tsx and patch-package but no dev tool, and applies the postgres.js patch', () => {
    expect(existsSync(path.join(dir, 'node_modules/tsx/package.json'))).toBe(true);
    expect(existsSync(path.join(dir, 'node_modules/patch-package/package.json'))).toBe(true);
    for (const devTool of ['vitest', 'drizzle-kit', '@biomejs/biome', 'hardhat', 'solc'])
      expect(existsSync(path.join(dir, 'node_modules', devTool)), devTool).toBe(false);
    // The same check as shared/db/driver-patch.test.ts, on the production install.
    for (const file of ['src/connection.js', 'cjs/src/connection.js']) {
      const source = readFileSync(path.join(dir, 'node_modules/postgres', file), 'utf8');
      const nextWrite = source.slice(
        source.indexOf('function nextWrite('),
        source.indexOf('function connectTimedOut('),
      );
      expect(nextWrite, file).toMatch(
        /if \(socket === null\) \{[\s\S]*error\(Errors\.connection\('CONNECTION_CLOSED'/,
      );
    }
  });

  it(
    'starts the hot path with `npm run start:hot-path`, which answers /healthz and keeps /metrics internal',
    async () => {
      const started = spawn('npm', ['run', 'start:hot-path'], {
        cwd: dir,
        detached: true,
        env: {
          PATH,
          HOME: process.env['HOME'] ?? dir,
          NODE_ENV: 'test',
          LOG_LEVEL: 'warn',
          DATABASE_URL: services.urlFor('credana_hot_path'),
          ...redisEnv(services),
          REDIS_KEY_PREFIX: services.prefix,
          HOT_PATH_PORT: '0',
          HOT_PATH_METRICS_PORT: '0',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child = started;
      let output = '';
      started.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      started.stderr?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      const until = Date.now() + START_TIMEOUT_MS;
      while (!output.includes('hot-path ready on ')) {
        if (started.exitCode !== null) throw new Error(`start:hot-path exited early: ${output}`);
        if (Date.now() > until) throw new Error(`start:hot-path not ready in time: ${output}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const publicUrl = /hot-path ready on (http:\/\/\S+)/.exec(output)?.[1];
      const metricsUrl = /hot-path metrics on (http:\/\/\S+)/.exec(output)?.[1];
      const health = await fetch(`${publicUrl}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ ok: true });
      expect((await fetch(`${publicUrl}/metrics`)).status).toBe(404);
      const metrics = await fetch(`${metricsUrl}/metrics`);
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toContain(
        'credana_dependency_up{dependency="redis",service="hot-path"} 1',
      );
    },
    START_TIMEOUT_MS + 10_000,
  );
});
