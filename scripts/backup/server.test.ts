// Proves `npm run backup -- --configure`'s server side on a real private PostgreSQL 15: archiving problems are found (archive off, another repository's archive_command), ALTER SYSTEM sets every setting, archive_mode is reported as waiting for a restart, and after the restart nothing is left to fix.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { type PostgresCluster, startPostgresCluster } from '../../test/support/processes.ts';
import { backupSettingsFrom, serverSettings } from './pgbackrest.ts';
import { type AdminSql, archivingProblems, configureServer, connectAdmin, serverFacts } from './server.ts';

let cluster: PostgresCluster;
let sql: AdminSql;
const wanted = serverSettings(
  backupSettingsFrom(loadConfig({ NODE_ENV: 'test', BACKUP_DIR: '/srv/credana-backup' })),
);

beforeAll(async () => {
  cluster = await startPostgresCluster();
  sql = connectAdmin(cluster.url);
});

afterAll(async () => {
  await sql?.end({ timeout: 5 });
  cluster?.destroy();
});

describe('configureServer', () => {
  it('finds a server that does not archive, configures it, and needs one restart for archive_mode', async () => {
    const before = await serverFacts(sql);
    expect(before.dataDir).toBe(cluster.dataDir);
    expect(before.port).toBe(cluster.port);
    expect(archivingProblems(before, wanted)).toEqual(['archive_mode is off (needs on, and a restart)']);

    expect(await configureServer(sql, wanted)).toEqual(['archive_mode']);
    const reloaded = await serverFacts(sql);
    // Shown as "(disabled)" until archive_mode is on.
    expect(reloaded.settings['archive_command']?.setting).toBe('(disabled)');
    expect(reloaded.settings['wal_compression']?.setting).toBe('zstd');
    expect(archivingProblems(reloaded, wanted)).toEqual(['archive_mode is off (needs on, and a restart)']);

    await sql.end({ timeout: 5 });
    await cluster.stopAsync();
    await cluster.startAsync();
    sql = connectAdmin(cluster.url);
    const restarted = await serverFacts(sql);
    expect(archivingProblems(restarted, wanted)).toEqual([]);
    expect(restarted.settings['archive_command']?.setting).toBe(wanted['archive_command']);
    expect(restarted.settings['archive_timeout']?.setting).toBe('60');
    // Another repository's command is found once it is visible.
    const elsewhere = { ...wanted, archive_command: 'pgbackrest --stanza=other archive-push %p' };
    expect(archivingProblems(restarted, elsewhere)).toEqual([
      'archive_command does not push to this repository',
    ]);
  });
});
