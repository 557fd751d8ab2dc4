/**
 * `npm run backup [-- --type full|diff|incr] [--configure]`: a pgBackRest backup of the financial
 * Postgres at DATABASE_URL, run on its host. Writes pgbackrest.conf from the BACKUP_* settings into
 * BACKUP_DIR, creates the stanza when new, checks WAL archiving end to end (`pgbackrest check`), takes
 * the backup (the first is always full), expires what the retention no longer needs, verifies the
 * repository (`pgbackrest verify`) and prints the compression ratio. `--configure` first sets the
 * server's archiving (ALTER SYSTEM: archive_mode, archive_command, archive_timeout, wal_compression);
 * archive_mode then needs a PostgreSQL restart.
 *
 * Exit 0 when the backup is in the repository and verified; otherwise one line on stderr, exit 1
 * (78 for a bad setting or argument).
 */
import { parseArgs } from 'node:util';
import { configFromProcess } from '../../shared/config.ts';
import { assertLimits } from './limits.ts';
import {
  backupSettingsFrom,
  type ClusterLocation,
  compressionFigures,
  errorLine,
  pgbackrest,
  runAsOwnerOf,
  serverSettings,
  sizeText,
  stanzaInfo,
  writeConfig,
} from './pgbackrest.ts';
import { archivingProblems, configureServer, connectAdmin, serverFacts } from './server.ts';

class Refusal extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

assertLimits();
const config = configFromProcess();

let args: { type: string; configure: boolean };
try {
  const parsed = parseArgs({
    args: process.argv.slice(2),
    options: { type: { type: 'string', default: 'incr' }, configure: { type: 'boolean', default: false } },
    strict: true,
    allowPositionals: false,
  });
  args = { type: parsed.values.type, configure: parsed.values.configure };
  if (!['full', 'diff', 'incr'].includes(args.type)) throw new Error('--type must be full, diff or incr');
} catch (error) {
  process.stderr.write(
    `backup: ${(error as Error).message} (usage: npm run backup -- [--type full|diff|incr] [--configure])\n`,
  );
  process.exit(78);
}

const settings = backupSettingsFrom(config);
const sql = connectAdmin(config.DATABASE_URL);
const say = (line: string) => process.stdout.write(`backup: ${line}\n`);

try {
  const facts = await serverFacts(sql);
  const socketDir = config.BACKUP_PG_SOCKET_DIR ?? facts.socketDir;
  if (socketDir === null) {
    throw new Refusal('the server listens on no Unix socket: set BACKUP_PG_SOCKET_DIR', 78);
  }
  const cluster: ClusterLocation = {
    dataDir: config.BACKUP_PG_DATA_DIR ?? facts.dataDir,
    socketDir,
    port: facts.port,
    user: decodeURIComponent(new URL(config.DATABASE_URL).username) || 'postgres',
  };
  const runAs = runAsOwnerOf(cluster.dataDir);
  writeConfig(settings, cluster, runAs);
  const wanted = serverSettings(settings);

  if (args.configure) {
    const waiting = await configureServer(sql, wanted);
    if (waiting.length > 0) {
      throw new Refusal(
        `set ${Object.keys(wanted).join(', ')}; ${waiting.join(' and ')} ${waiting.length === 1 ? 'takes' : 'take'} effect after a PostgreSQL restart: restart it, then run npm run backup again`,
      );
    }
    say(`server configured: ${Object.keys(wanted).join(', ')}`);
  }
  const problems = archivingProblems(await serverFacts(sql), wanted);
  if (problems.length > 0) {
    throw new Refusal(
      `PostgreSQL at DATABASE_URL does not archive its WAL to this repository, so no point in time could be restored: ${problems.join('; ')}. Run npm run backup -- --configure (or set in postgresql.conf: archive_mode = on, archive_command = '${wanted['archive_command']}')`,
    );
  }
  if (facts.settings['wal_compression']?.setting !== 'zstd') {
    say(`warning: wal_compression is ${facts.settings['wal_compression']?.setting ?? 'unknown'}, not zstd`);
  }

  // PGPASSWORD for pgBackRest's libpq connection when DATABASE_URL carries one (never logged).
  const password = decodeURIComponent(new URL(config.DATABASE_URL).password);
  const env: Record<string, string> = password === '' ? {} : { PGPASSWORD: password };
  const step = async (command: string, extra: string[] = []) => {
    const result = await pgbackrest(settings, runAs, command, extra, env);
    if (result.code !== 0) throw new Refusal(`pgbackrest ${command} failed: ${errorLine(result)}`);
    return result;
  };

  await step('stanza-create');
  await step('check');
  const startedMs = Date.now();
  await step('backup', [`--type=${args.type}`]);
  const info = await stanzaInfo(settings, runAs);
  const latest = info?.backup.at(-1);
  say(
    `${latest?.type ?? args.type} backup ${latest?.label ?? '?'} of ${cluster.dataDir} in ${((Date.now() - startedMs) / 1000).toFixed(1)} s (stanza ${settings.stanza}, ${settings.repo.type} repository ${settings.repo.path}); full backups kept ${settings.retentionFullDays} days`,
  );
  await step('verify');
  say('verify: every backup and archived WAL file in the repository reads back with its checksum');

  const figures = compressionFigures(settings, info);
  const parts: string[] = [];
  const b = figures.backup;
  if (b !== null) {
    parts.push(
      `this backup ${sizeText(b.databaseBytes)} of database → ${sizeText(b.repoBytes)} in the repository (${b.ratio.toFixed(1)}×)` +
        (b.type === 'full'
          ? ''
          : `, of which this ${b.type} copied ${sizeText(b.changedBytes)} changed → ${sizeText(b.addedBytes)} added`),
    );
  }
  if (figures.wal !== null) {
    parts.push(
      `archived WAL ${figures.wal.segments} segments, ${sizeText(figures.wal.walBytes)} → ${sizeText(figures.wal.repoBytes)} (${figures.wal.ratio.toFixed(1)}×)`,
    );
  }
  if (figures.repo !== null) {
    parts.push(
      `whole repository ${sizeText(figures.repo.repoBytes)} for a ${sizeText(figures.repo.databaseBytes)} database (${figures.repo.ratio.toFixed(2)}×)`,
    );
  }
  say(`compression (zstd): ${parts.join('; ')}`);
} catch (error) {
  const refusal = error instanceof Refusal ? error : null;
  process.stderr.write(`backup: ${refusal?.message ?? (error as Error).message}\n`);
  process.exitCode = refusal?.exitCode ?? 1;
} finally {
  await sql.end({ timeout: 5 });
}
