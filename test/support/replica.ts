/**
 * A streaming read replica of a private cluster (test/support/processes.ts `startPostgresCluster`):
 * `pg_basebackup -R` from the primary into a folder of its own, started as a hot standby on a free port.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, type PostgresCluster, pgBin } from './processes.ts';

export interface PostgresReplica {
  port: number;
  url: string;
  stopAsync(): Promise<void>;
  startAsync(): Promise<void>;
  destroy(): void;
}

export async function startPostgresReplica(primary: PostgresCluster): Promise<PostgresReplica> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'credana-replica-'));
  const data = path.join(dir, 'data');
  const asPostgres = process.getuid?.() === 0;
  if (asPostgres) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const command = (bin: string, args: string[]): [string, string[]] =>
    asPostgres ? ['runuser', ['-u', 'postgres', '--', pgBin(bin), ...args]] : [pgBin(bin), args];
  const runAsync = (bin: string, args: string[]) =>
    new Promise<void>((resolve, reject) => {
      execFile(...command(bin, args), (error) => (error === null ? resolve() : reject(error)));
    });
  // -R writes primary_conninfo and standby.signal; -X stream copies the WAL written meanwhile.
  execFileSync(
    ...command('pg_basebackup', [
      '-h',
      '127.0.0.1',
      '-p',
      String(primary.port),
      '-U',
      'postgres',
      '-D',
      data,
      '-R',
      '-X',
      'stream',
      '--no-sync',
    ]),
    { stdio: 'pipe' },
  );
  const startArgs = [
    '-D',
    data,
    '-l',
    path.join(dir, 'log'),
    '-w',
    '-o',
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c hot_standby=on`,
    'start',
  ];
  const stopArgs = ['-D', data, '-m', 'immediate', '-w', 'stop'];
  await runAsync('pg_ctl', startArgs);
  return {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stopAsync: () => runAsync('pg_ctl', stopArgs),
    startAsync: () => runAsync('pg_ctl', startArgs),
    destroy() {
      try {
        execFileSync(...command('pg_ctl', stopArgs), { stdio: 'pipe' });
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
