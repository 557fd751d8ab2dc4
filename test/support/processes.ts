/**
 * Private server processes for tests that stop or kill a server: their own redis-server and their own
 * PostgreSQL cluster (initdb + pg_ctl), never the machine's shared ones. Also spawns our own services
 * as real child processes.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address !== null
          ? resolve(address.port)
          : reject(new Error('no port')),
      );
    });
  });
}

/** Thrown by a `waitFor` check that knows waiting longer cannot help. */
class GaveUp extends Error {}

async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      if (await check()) return;
    } catch (error) {
      if (error instanceof GaveUp) throw error;
      // not yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export interface RedisServer {
  port: number;
  url: string;
  dir: string;
  kill(signal?: NodeJS.Signals): Promise<void>;
  start(): Promise<void>;
  /** Deletes its data directory too. */
  destroy(): Promise<void>;
}

/**
 * A private redis-server. `extraArgs` e.g. ['--appendonly', 'yes', '--appendfsync', 'always'];
 * `options.port` a port to use instead of a free one (a test of the port being taken).
 */
export async function startRedisServer(
  extraArgs: string[] = [],
  options: { port?: number } = {},
): Promise<RedisServer> {
  const port = options.port ?? (await freePort());
  const dir = mkdtempSync(path.join(tmpdir(), 'credana-redis-'));
  let child: ChildProcess | null = null;
  const start = async () => {
    child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, ...extraArgs],
      {
        stdio: 'ignore',
      },
    );
    const started = child;
    await waitFor(() => {
      // The port came from freePort(), so another process (another test run's server or proxy) may
      // have taken it meanwhile, and our server then failed to bind: only our own process answers
      // ready, or a run could share another run's Redis without knowing.
      if (started.exitCode !== null || started.signalCode !== null)
        throw new GaveUp(`redis-server on ${port} exited (the port taken?)`);
      try {
        const info = execFileSync('redis-cli', ['-p', String(port), 'info', 'server'], { encoding: 'utf8' });
        return new RegExp(`^process_id:${started.pid}\\r?$`, 'm').test(info);
      } catch {
        return false;
      }
    }, `redis-server on ${port}`);
  };
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    const c = child;
    if (c === null || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((resolve) => c.once('exit', resolve));
    c.kill(signal);
    await exited;
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    kill,
    start,
    async destroy() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface PostgresCluster {
  port: number;
  /** URL of the `postgres` database of this cluster. */
  url: string;
  /** The data directory (PGDATA). */
  dataDir: string;
  /** The folder of the Unix socket (and of the data directory and the log). */
  socketDir: string;
  /** The server's log file (everything the server logs, e.g. pgaudit's AUDIT lines). */
  logPath: string;
  stop(): void;
  start(): void;
  /**
   * stop() and start() without blocking the event loop, for tests whose own traffic (HTTP requests,
   * timers) must keep flowing while the server goes down or comes back.
   */
  stopAsync(): Promise<void>;
  startAsync(): Promise<void>;
  destroy(): void;
}

export function pgBin(name: string): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).sort() : [];
  for (const v of versions.reverse()) {
    const candidate = path.join(root, v, 'bin', name);
    if (existsSync(candidate)) return candidate;
  }
  return name;
}

export interface PostgresClusterOptions {
  /**
   * Lines appended to postgresql.conf before the first start, e.g. `{ shared_preload_libraries:
   * 'pgaudit' }` (values are quoted for you). In the file rather than on the command line, so a copy of
   * the data directory (a restored backup) keeps them.
   */
  settings?: Readonly<Record<string, string>>;
}

/** Quotes a postgresql.conf value: single quotes, a quote inside doubled. */
function confValue(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** A private PostgreSQL cluster (initdb into a temp dir, trust auth), started on a free port. */
export async function startPostgresCluster(options: PostgresClusterOptions = {}): Promise<PostgresCluster> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'credana-pg-'));
  const data = path.join(dir, 'data');
  // initdb refuses to run as root; run it (and the server) as the postgres OS user when we are root.
  const asPostgres = process.getuid?.() === 0;
  if (asPostgres) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const command = (bin: string, args: string[]): [string, string[]] =>
    asPostgres ? ['runuser', ['-u', 'postgres', '--', pgBin(bin), ...args]] : [pgBin(bin), args];
  const run = (bin: string, args: string[]) => execFileSync(...command(bin, args), { stdio: 'pipe' });
  const runAsync = (bin: string, args: string[]) =>
    new Promise<void>((resolve, reject) => {
      execFile(...command(bin, args), (error) => (error === null ? resolve() : reject(error)));
    });
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8']);
  const settings = Object.entries(options.settings ?? {});
  if (settings.length > 0) {
    const lines = settings.map(([name, value]) => `${name} = ${confValue(value)}\n`).join('');
    appendFileSync(path.join(data, 'postgresql.conf'), `\n# startPostgresCluster settings\n${lines}`);
  }
  const startArgs = [
    '-D',
    data,
    '-l',
    path.join(dir, 'log'),
    '-w',
    '-o',
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
    'start',
  ];
  const stopArgs = ['-D', data, '-m', 'immediate', '-w', 'stop'];
  const start = () => run('pg_ctl', startArgs);
  const stop = () => run('pg_ctl', stopArgs);
  start();
  return {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    dataDir: data,
    socketDir: dir,
    logPath: path.join(dir, 'log'),
    stop,
    start,
    stopAsync: () => runAsync('pg_ctl', stopArgs),
    startAsync: () => runAsync('pg_ctl', startArgs),
    destroy() {
      try {
        stop();
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ServiceProcess {
  child: ChildProcess;
  output: () => string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Spawns `tsx <entry> [args]` with the given environment and waits until its output contains `readyText`.
 * NODE_ENV is `test` unless `env` says otherwise: unset would mean production (shared/config.ts).
 */
export async function spawnService(
  entry: string,
  env: Record<string, string>,
  readyText: string,
  options: {
    args?: readonly string[] /** How long it may take to say `readyText` (default 60 s). */;
    startTimeoutMs?: number;
  } = {},
): Promise<ServiceProcess> {
  // `node --import tsx` runs the service in ONE process, so a SIGKILL really kills it (the `tsx` CLI is
  // a wrapper process whose death would leave the service running as an orphan).
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...(options.args ?? [])], {
    env: { PATH: process.env['PATH'] ?? '', NODE_ENV: 'test', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;
  const until = Date.now() + startTimeoutMs;
  while (!out.includes(readyText)) {
    if (child.exitCode !== null)
      throw new Error(`${entry} exited early (${child.exitCode}): ${out.slice(-2_000)}`);
    if (Date.now() > until)
      throw new Error(
        `${entry} did not say "${readyText}" in ${startTimeoutMs / 1000} s: ${out.slice(-2_000)}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    child,
    output: () => out,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await exited;
    },
  };
}

export interface ScriptResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const REPO_ROOT = path.resolve(import.meta.dirname, '../..');
const TSX_CLI = createRequire(import.meta.url).resolve('tsx/cli');

/**
 * Runs one of our entry points to completion under tsx, the way npm scripts start it, with exactly
 * `env`: nothing of the test runner's environment leaks in (Node and tsx are given by path).
 */
export function runScript(
  script: string,
  args: readonly string[],
  env: Record<string, string>,
): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TSX_CLI, script, ...args], {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
