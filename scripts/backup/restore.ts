/**
 * `npm run restore -- --to <time|latest> --into <dir|port>`: point-in-time recovery of the financial
 * Postgres from the pgBackRest repository, always into a NEW cluster (never over the running one).
 *
 * - `--to`: a timestamp with its UTC offset (`2026-12-07T10:15:30.123456Z`, `2026-12-07 11:15:30+01`),
 *   or `latest` (replay every archived WAL segment). Recovery stops after the last transaction that
 *   committed at or before that time, then promotes.
 * - `--into <dir>`: restores into an empty or new folder and stops there; start it with pg_ctl.
 * - `--into <port>`: restores into BACKUP_DIR/restores/<stamp>-<port>, starts PostgreSQL on that port
 *   (127.0.0.1), waits until recovery has finished and it serves, and prints the time it took (RTO).
 *
 * The restored cluster does not archive (archive_mode=off): a copy must never push its WAL into the
 * production repository. One line on stderr and a non-zero exit on anything it cannot do.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createConnection } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { configFromProcess } from '../../shared/config.ts';
import { assertLimits, limits } from './limits.ts';
import {
  backupSettingsFrom,
  commandAs,
  configPathOf,
  errorLine,
  makeOwnedFolder,
  pgbackrest,
  type RunAs,
  recoveryTarget,
  runAsOwnerOf,
  stanzaInfo,
  writeConfig,
} from './pgbackrest.ts';

class Refusal extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function pgBinDir(major: string): string {
  const debian = `/usr/lib/postgresql/${major}/bin`;
  if (existsSync(path.join(debian, 'pg_ctl'))) return debian;
  throw new Refusal(
    `no PostgreSQL ${major} binaries at ${debian} (the backup's version is needed to start it)`,
  );
}

function run(file: string, args: string[], runAs: RunAs): Promise<void> {
  const [bin, argv] = commandAs(runAs, file, args);
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      argv,
      { env: { PATH: '/usr/bin:/bin' }, timeout: limits.commandTimeoutMs },
      (error, _out, stderr) =>
        error === null
          ? resolve()
          : reject(
              new Refusal(
                `${path.basename(file)} failed: ${stderr.trim().split('\n').at(-1) || error.message}`,
              ),
            ),
    );
  });
}

/** Who restores: root restores as the owner of the posix repository (the cluster's OS user). */
function restoreRunAs(repoFolder: string | null): RunAs {
  if (process.getuid?.() !== 0) return runAsOwnerOf('.');
  if (repoFolder === null || !existsSync(repoFolder)) {
    throw new Refusal(
      'running as root without a posix repository to take the PostgreSQL OS user from: run as that user',
    );
  }
  return runAsOwnerOf(repoFolder);
}

assertLimits();
const config = configFromProcess();
const settings = backupSettingsFrom(config);
const say = (line: string) => process.stdout.write(`restore: ${line}\n`);

try {
  let values: { to?: string; into?: string };
  try {
    values = parseArgs({
      args: process.argv.slice(2),
      options: { to: { type: 'string' }, into: { type: 'string' } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new Refusal((error as Error).message, 78);
  }
  const usage = 'usage: npm run restore -- --to <time with offset|latest> --into <empty dir|port>';
  if (values.to === undefined || values.into === undefined)
    throw new Refusal(`--to and --into are required (${usage})`, 78);
  const target = values.to === 'latest' ? null : recoveryTarget(values.to);
  if (values.to !== 'latest' && target === null) {
    throw new Refusal(
      `--to ${JSON.stringify(values.to.slice(0, 64))} is not a timestamp with a UTC offset (${usage})`,
      78,
    );
  }
  const port = /^\d{1,5}$/.test(values.into) ? Number(values.into) : null;
  if (port !== null && (port < 1 || port > 65_535)) throw new Refusal(`--into ${port} is not a port`, 78);
  if (port !== null && (await portInUse(port)))
    throw new Refusal(`port ${port} is already in use on 127.0.0.1`, 78);

  const runAs = restoreRunAs(settings.repo.type === 'posix' ? settings.repo.path : null);
  // Keep the configuration `npm run backup` wrote (the archive_command names it); write one without a
  // cluster section when this machine has none (restoring elsewhere, e.g. from S3).
  if (!existsSync(configPathOf(settings))) writeConfig(settings, null, runAs);

  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  const dataDir =
    port === null ? path.resolve(values.into) : path.join(settings.dir, 'restores', `${stamp}-${port}`);
  if (existsSync(dataDir) && readdirSync(dataDir).length > 0) {
    throw new Refusal(`${dataDir} is not empty: restore into a new or empty folder`, 78);
  }
  if (port !== null) makeOwnedFolder(path.dirname(dataDir), runAs);
  makeOwnedFolder(dataDir, runAs);

  const info = await stanzaInfo(settings, runAs);
  if (info === null || info.backup.length === 0) {
    throw new Refusal(`the repository has no backup of stanza ${settings.stanza}: run npm run backup first`);
  }
  const startedMs = Date.now();
  const restoreArgs = [
    `--pg1-path=${dataDir}`,
    '--archive-mode=off',
    ...(target === null
      ? ['--type=default']
      : ['--type=time', `--target=${target}`, '--target-action=promote']),
  ];
  const result = await pgbackrest(settings, runAs, 'restore', restoreArgs);
  if (result.code !== 0) throw new Refusal(`pgbackrest restore failed: ${errorLine(result)}`);
  const restoredMs = Date.now() - startedMs;
  say(
    `restored ${settings.stanza} to ${target ?? 'the end of the archived WAL'} into ${dataDir} in ${(restoredMs / 1000).toFixed(1)} s`,
  );

  const bin = pgBinDir(info.db.at(-1)?.version ?? '15');
  if (port === null) {
    say(
      `start it with: ${path.join(bin, 'pg_ctl')} -D ${dataDir} -o "-p <port>" start (it replays WAL to the target, then promotes)`,
    );
  } else {
    const socketDir = path.dirname(dataDir);
    const logFile = `${dataDir}.log`;
    await run(
      path.join(bin, 'pg_ctl'),
      [
        '-D',
        dataDir,
        '-l',
        logFile,
        '-w',
        '-t',
        String(limits.restoreServingWaitS),
        '-o',
        `-p ${port} -k ${socketDir} -c listen_addresses=127.0.0.1`,
        'start',
      ],
      runAs,
    );
    // pg_ctl returns once connections are accepted; the copy serves once recovery ended and it promoted.
    const user = decodeURIComponent(new URL(config.DATABASE_URL).username) || 'postgres';
    const url = `postgres://${encodeURIComponent(user)}@127.0.0.1:${port}/postgres`;
    const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5 });
    try {
      const until = Date.now() + limits.restoreServingWaitS * 1_000;
      for (;;) {
        try {
          const [row] = await sql<{ recovering: boolean }[]>`select pg_is_in_recovery() as recovering`;
          if (row?.recovering === false) break;
        } catch {
          // still starting or replaying
        }
        if (Date.now() > until)
          throw new Refusal(
            `the restored server did not finish recovery in ${limits.restoreServingWaitS} s (log: ${logFile})`,
          );
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      await sql.end({ timeout: 5 });
    }
    const servingMs = Date.now() - startedMs;
    say(
      `serving on 127.0.0.1:${port} (data ${dataDir}, log ${logFile}); RTO ${(servingMs / 1000).toFixed(1)} s from the start of the restore to serving`,
    );
    say(`stop it with: ${path.join(bin, 'pg_ctl')} -D ${dataDir} stop`);
  }
} catch (error) {
  const refusal = error instanceof Refusal ? error : null;
  process.stderr.write(`restore: ${refusal?.message ?? (error as Error).message}\n`);
  process.exitCode = refusal?.exitCode ?? 1;
}
