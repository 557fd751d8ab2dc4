/**
 * pgBackRest for the financial Postgres: the configuration generated from our config into a private
 * folder (nothing under /etc), the settings the server needs for WAL archiving, and running the
 * `pgbackrest` binary as the OS user that owns the cluster.
 *
 * It is an invariant that backups and archived WAL are compressed with zstd (`compress-type=zst`),
 * full backups are kept by time (`repo1-retention-full-type=time`, BACKUP_RETENTION_FULL_DAYS), and
 * archived WAL is kept as long as the backups that need it, so any moment of the retention window can
 * be restored.
 */
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../../shared/config.ts';
import { limits } from './limits.ts';

export const PGBACKREST_BIN = '/usr/bin/pgbackrest';

/** What pgBackRest needs to know about the cluster it backs up (absent when only restoring). */
export interface ClusterLocation {
  dataDir: string;
  socketDir: string;
  port: number;
  /** The database user pgBackRest connects as (backups, check): a superuser or pg_checkpoint + pg_read_all_settings. */
  user: string;
}

export interface BackupSettings {
  stanza: string;
  /** Absolute: holds pgbackrest.conf, lock/, log/, spool/ and restores/. */
  dir: string;
  repo:
    | { type: 'posix'; path: string }
    | {
        type: 's3';
        path: string;
        bucket: string;
        endpoint: string;
        region: string;
        keyType: 'auto' | 'shared';
        key?: string;
        keySecret?: string;
      };
  retentionFullDays: number;
  archiveTimeoutS: number;
  processMax: number;
  cipherPass?: string;
}

/** Our config → the backup settings (paths made absolute: pgBackRest refuses relative ones). */
export function backupSettingsFrom(config: Config): BackupSettings {
  const dir = path.resolve(config.BACKUP_DIR);
  const repo: BackupSettings['repo'] =
    config.BACKUP_REPO_TYPE === 'posix'
      ? { type: 'posix', path: path.resolve(config.BACKUP_REPO_PATH ?? path.join(dir, 'repo')) }
      : {
          type: 's3',
          path: config.BACKUP_REPO_PATH ?? '/credana',
          // The schema requires these three with BACKUP_REPO_TYPE=s3.
          bucket: config.BACKUP_S3_BUCKET ?? '',
          endpoint: config.BACKUP_S3_ENDPOINT ?? '',
          region: config.BACKUP_S3_REGION ?? '',
          keyType: config.BACKUP_S3_KEY_TYPE,
          ...(config.BACKUP_S3_KEY === undefined ? {} : { key: config.BACKUP_S3_KEY }),
          ...(config.BACKUP_S3_KEY_SECRET === undefined ? {} : { keySecret: config.BACKUP_S3_KEY_SECRET }),
        };
  return {
    stanza: config.BACKUP_STANZA,
    dir,
    repo,
    retentionFullDays: config.BACKUP_RETENTION_FULL_DAYS,
    archiveTimeoutS: config.BACKUP_ARCHIVE_TIMEOUT_S,
    processMax: config.BACKUP_PROCESS_MAX,
    ...(config.BACKUP_CIPHER_PASS === undefined ? {} : { cipherPass: config.BACKUP_CIPHER_PASS }),
  };
}

export const configPathOf = (settings: BackupSettings) => path.join(settings.dir, 'pgbackrest.conf');

/**
 * The server's `archive_command`: every finished WAL segment is pushed (zstd-compressed) to the
 * repository before Postgres may recycle it.
 */
export function archiveCommand(settings: BackupSettings): string {
  return `${PGBACKREST_BIN} --config=${configPathOf(settings)} --stanza=${settings.stanza} archive-push %p`;
}

/** The postgresql.conf settings point-in-time recovery needs (archive_mode needs a restart). */
export function serverSettings(settings: BackupSettings): Record<string, string> {
  return {
    wal_level: 'replica',
    archive_mode: 'on',
    archive_command: archiveCommand(settings),
    archive_timeout: `${settings.archiveTimeoutS}s`,
    wal_compression: 'zstd',
  };
}

/** The pgbackrest.conf text. Holds secrets when the repository has keys or a cipher pass: mode 0600. */
export function renderConfig(settings: BackupSettings, cluster: ClusterLocation | null): string {
  const repo = settings.repo;
  const global = [
    `repo1-type=${repo.type}`,
    `repo1-path=${repo.path}`,
    'repo1-retention-full-type=time',
    `repo1-retention-full=${settings.retentionFullDays}`,
    'compress-type=zst',
    'compress-level=3',
    `process-max=${settings.processMax}`,
    // The backup starts with an immediate checkpoint rather than waiting for the next one.
    'start-fast=y',
    `archive-timeout=${limits.archivePushWaitS}`,
    `lock-path=${path.join(settings.dir, 'lock')}`,
    `log-path=${path.join(settings.dir, 'log')}`,
    `spool-path=${path.join(settings.dir, 'spool')}`,
    'log-level-console=warn',
    'log-level-file=info',
  ];
  if (repo.type === 's3') {
    global.push(
      `repo1-s3-bucket=${repo.bucket}`,
      `repo1-s3-endpoint=${repo.endpoint}`,
      `repo1-s3-region=${repo.region}`,
      `repo1-s3-key-type=${repo.keyType}`,
    );
    if (repo.keyType === 'shared') {
      global.push(`repo1-s3-key=${repo.key ?? ''}`, `repo1-s3-key-secret=${repo.keySecret ?? ''}`);
    }
  }
  if (settings.cipherPass !== undefined) {
    global.push('repo1-cipher-type=aes-256-cbc', `repo1-cipher-pass=${settings.cipherPass}`);
  }
  const stanza =
    cluster === null
      ? []
      : [
          `pg1-path=${cluster.dataDir}`,
          `pg1-port=${cluster.port}`,
          `pg1-socket-path=${cluster.socketDir}`,
          `pg1-user=${cluster.user}`,
        ];
  const lines = [
    '# Generated by scripts/backup from the BACKUP_* settings; edits are overwritten.',
    '[global]',
    ...global,
    '',
    `[${settings.stanza}]`,
    ...stanza,
  ];
  return `${lines.join('\n')}\n`;
}

/** The OS user to run pgBackRest as: ourselves, unless we are root (then the data directory's owner). */
export interface RunAs {
  uid: number;
  gid: number;
  /** Null: run as ourselves. */
  user: string | null;
}

export function runAsOwnerOf(folder: string): RunAs {
  const uid = process.getuid?.() ?? -1;
  if (uid !== 0) return { uid, gid: process.getgid?.() ?? -1, user: null };
  const stat = statSync(folder);
  if (stat.uid === 0) throw new Error(`${folder} belongs to root: PostgreSQL never runs as root`);
  return { uid: stat.uid, gid: stat.gid, user: String(stat.uid) };
}

/** `file args` as `runAs` (through setpriv when we are root), for execFile. */
export function commandAs(runAs: RunAs, file: string, args: readonly string[]): [string, string[]] {
  return runAs.user === null
    ? [file, [...args]]
    : ['setpriv', [`--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, '--clear-groups', file, ...args]];
}

/** Makes a folder (and parents) that `runAs` owns; pgBackRest writes there as that user. */
export function makeOwnedFolder(folder: string, runAs: RunAs): void {
  mkdirSync(folder, { recursive: true, mode: 0o700 });
  if (runAs.user !== null) chownSync(folder, runAs.uid, runAs.gid);
}

/** Writes pgbackrest.conf (0600, owned by `runAs`) and the folders it names. Returns its path. */
export function writeConfig(settings: BackupSettings, cluster: ClusterLocation | null, runAs: RunAs): string {
  makeOwnedFolder(settings.dir, runAs);
  for (const sub of ['lock', 'log', 'spool']) makeOwnedFolder(path.join(settings.dir, sub), runAs);
  if (settings.repo.type === 'posix') makeOwnedFolder(settings.repo.path, runAs);
  const file = configPathOf(settings);
  writeFileSync(file, renderConfig(settings, cluster), { mode: 0o600 });
  if (runAs.user !== null) chownSync(file, runAs.uid, runAs.gid);
  return file;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `pgbackrest --config=… --stanza=… <command> [args]` as `runAs`, with an environment of our
 * own (no PGBACKREST_* variable of the caller's leaks in). Resolves with the exit code; never throws
 * on a non-zero one.
 */
export function pgbackrest(
  settings: BackupSettings,
  runAs: RunAs,
  command: string,
  args: readonly string[] = [],
  env: Readonly<Record<string, string>> = {},
): Promise<RunResult> {
  const argv = [`--config=${configPathOf(settings)}`, `--stanza=${settings.stanza}`, ...args, command];
  const [file, fileArgs] = commandAs(runAs, PGBACKREST_BIN, argv);
  return new Promise((resolve, reject) => {
    execFile(
      file,
      fileArgs,
      {
        env: { PATH: '/usr/bin:/bin', ...env },
        cwd: settings.dir,
        maxBuffer: limits.outputBytesMax,
        timeout: limits.commandTimeoutMs,
      },
      (error, stdout, stderr) => {
        if (error !== null && typeof error.code !== 'number') {
          reject(new Error(`pgbackrest ${command} could not run: ${error.message}`));
          return;
        }
        resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr });
      },
    );
  });
}

/** pgBackRest's own error line(s), for the one line we print (its messages carry no secrets). */
export function errorLine(result: RunResult): string {
  const text = `${result.stderr}\n${result.stdout}`
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  const errors = text.filter((line) => /ERROR|WARN/.test(line));
  return (errors.length > 0 ? errors : text).join(' / ').slice(0, 2_000) || `exit code ${result.code}`;
}

/** The parts of `pgbackrest info --output=json` we read. */
export interface StanzaInfo {
  name: string;
  status: { code: number; message: string };
  db: { version: string }[];
  archive: { min: string | null; max: string | null }[];
  backup: {
    label: string;
    type: 'full' | 'diff' | 'incr';
    timestamp: { start: number; stop: number };
    info: { size: number; delta: number; repository: { size: number; delta: number } };
  }[];
}

export async function stanzaInfo(settings: BackupSettings, runAs: RunAs): Promise<StanzaInfo | null> {
  const result = await pgbackrest(settings, runAs, 'info', ['--output=json']);
  if (result.code !== 0) throw new Error(`pgbackrest info: ${errorLine(result)}`);
  const all = JSON.parse(result.stdout) as StanzaInfo[];
  return all.find((stanza) => stanza.name === settings.stanza) ?? null;
}

/**
 * Bytes of every file under `folder` (0 when it does not exist). Symbolic links are not followed:
 * pgBackRest's `latest` link points at a backup already counted.
 */
export function folderBytes(folder: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) {
        bytes += statSync(full).size;
        files += 1;
      }
    }
  };
  if (existsSync(folder)) walk(folder);
  return { bytes, files };
}

const WAL_SEGMENT_BYTES = 16 * 1024 * 1024;

export interface CompressionFigures {
  /** The latest backup: database bytes it covers, and what it added to the repository. */
  backup: {
    label: string;
    type: string;
    databaseBytes: number;
    repoBytes: number;
    ratio: number;
    /** What this backup copied (all of it for a full one) and what that added to the repository. */
    changedBytes: number;
    addedBytes: number;
  } | null;
  /** Archived WAL in a posix repository: segments × 16 MiB vs bytes stored. */
  wal: { segments: number; walBytes: number; repoBytes: number; ratio: number } | null;
  /** A posix repository as a whole (backups + WAL) vs the database size of its latest backup. */
  repo: { repoBytes: number; databaseBytes: number; ratio: number } | null;
}

export function compressionFigures(settings: BackupSettings, info: StanzaInfo | null): CompressionFigures {
  const latest = info?.backup.at(-1);
  const backup =
    latest === undefined
      ? null
      : {
          label: latest.label,
          type: latest.type,
          databaseBytes: latest.info.size,
          repoBytes: latest.info.repository.size,
          ratio: latest.info.size / Math.max(1, latest.info.repository.size),
          changedBytes: latest.info.delta,
          addedBytes: latest.info.repository.delta,
        };
  if (settings.repo.type !== 'posix') return { backup, wal: null, repo: null };
  const archive = path.join(settings.repo.path, 'archive', settings.stanza);
  let segments = 0;
  let walRepoBytes = 0;
  if (existsSync(archive)) {
    for (const entry of readdirSync(archive, { withFileTypes: true, recursive: true })) {
      // Segment files: 24 hex digits, a dash and the checksum (`…-<sha1>.zst`); not .history/.backup.
      if (entry.isFile() && /^[0-9A-F]{24}-[0-9a-f]{40}/.test(entry.name)) {
        segments += 1;
        walRepoBytes += statSync(path.join(entry.parentPath, entry.name)).size;
      }
    }
  }
  const wal =
    segments === 0
      ? null
      : {
          segments,
          walBytes: segments * WAL_SEGMENT_BYTES,
          repoBytes: walRepoBytes,
          ratio: (segments * WAL_SEGMENT_BYTES) / Math.max(1, walRepoBytes),
        };
  const whole = folderBytes(settings.repo.path).bytes;
  const repo =
    latest === undefined
      ? null
      : { repoBytes: whole, databaseBytes: latest.info.size, ratio: latest.info.size / Math.max(1, whole) };
  return { backup, wal, repo };
}

/** A timestamp Postgres reads exactly (microseconds kept), with an explicit offset; null if not one. */
export function recoveryTarget(text: string): string | null {
  const match =
    /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)\s*(Z|[+-]\d{2}(?::?\d{2})?)$/i.exec(
      text.trim(),
    );
  if (match === null) return null;
  const [, date, time, zone] = match;
  if (Number.isNaN(Date.parse(`${date}T${time!.slice(0, 12)}${zone === 'z' || zone === 'Z' ? 'Z' : zone}`)))
    return null;
  return `${date} ${time}${zone!.toUpperCase() === 'Z' ? '+00' : zone}`;
}

/** Bytes for people: KiB below one MiB, else MiB with one decimal. */
export const sizeText = (bytes: number) =>
  bytes < 1024 * 1024 ? `${Math.round(bytes / 1024)} KiB` : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
