/**
 * What the backup tools ask the financial Postgres: where it keeps its data, and whether it archives
 * WAL the way point-in-time recovery needs. A connection of its own, closed by the caller.
 */
import postgres from 'postgres';
import { limits } from './limits.ts';

export type AdminSql = postgres.Sql;

export function connectAdmin(url: string): AdminSql {
  return postgres(url, {
    max: 1,
    onnotice: () => {},
    connect_timeout: 10,
    connection: { statement_timeout: limits.statementTimeoutMs, application_name: 'credana-backup' },
  });
}

export interface ServerFacts {
  dataDir: string;
  /** The first of unix_socket_directories, or null when the server listens on no socket. */
  socketDir: string | null;
  port: number;
  /** Current values by name (archive_mode, archive_command, archive_timeout, wal_compression, wal_level). */
  settings: Record<string, { setting: string; pendingRestart: boolean }>;
}

const ARCHIVE_SETTINGS = [
  'archive_mode',
  'archive_command',
  'archive_timeout',
  'wal_compression',
  'wal_level',
];

export async function serverFacts(sql: AdminSql): Promise<ServerFacts> {
  const rows = await sql<{ name: string; setting: string; pending_restart: boolean }[]>`
    select name, setting, pending_restart from pg_settings
    where name = any(${['data_directory', 'unix_socket_directories', 'port', ...ARCHIVE_SETTINGS]})`;
  const byName = Object.fromEntries(
    rows.map((r) => [r.name, { setting: r.setting, pendingRestart: r.pending_restart }]),
  );
  const dataDir = byName['data_directory']?.setting;
  if (dataDir === undefined) {
    throw new Error('the database user cannot read data_directory (needs superuser or pg_read_all_settings)');
  }
  const socket = (byName['unix_socket_directories']?.setting ?? '').split(',')[0]?.trim() ?? '';
  return {
    dataDir,
    socketDir: socket === '' ? null : socket,
    port: Number(byName['port']?.setting ?? '5432'),
    settings: byName,
  };
}

/**
 * Sets what `wanted` lists with ALTER SYSTEM and reloads. Returns the names still waiting for a
 * restart (archive_mode and wal_level take effect only then).
 */
export async function configureServer(sql: AdminSql, wanted: Record<string, string>): Promise<string[]> {
  for (const [name, value] of Object.entries(wanted)) {
    // ALTER SYSTEM takes no bind parameters; the names are ours and the value is quoted as a literal.
    await sql.unsafe(`alter system set ${name} = '${value.replaceAll("'", "''")}'`);
  }
  await sql`select pg_reload_conf()`;
  // pg_settings shows a reloaded value only to a new session's snapshot of the file: ask again after a moment.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const facts = await serverFacts(sql);
  return Object.keys(wanted).filter((name) => facts.settings[name]?.pendingRestart === true);
}

/** Why the server cannot be backed up for point-in-time recovery as it stands; empty when it can. */
export function archivingProblems(facts: ServerFacts, wanted: Record<string, string>): string[] {
  const problems: string[] = [];
  const value = (name: string) => facts.settings[name]?.setting ?? '';
  if (value('archive_mode') !== 'on' && value('archive_mode') !== 'always') {
    problems.push(`archive_mode is ${value('archive_mode') || 'unknown'} (needs on, and a restart)`);
  }
  if (value('wal_level') === 'minimal') problems.push('wal_level is minimal (needs replica)');
  // With archive_mode off, Postgres shows archive_command as "(disabled)": judged after the restart.
  if (value('archive_command') !== '(disabled)' && value('archive_command') !== wanted['archive_command']) {
    problems.push('archive_command does not push to this repository');
  }
  return problems;
}
