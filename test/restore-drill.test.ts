// Proves point-in-time recovery end to end on real processes: a private PostgreSQL 15 (pgaudit loaded) archives its WAL with pgBackRest (zstd, encrypted repository), `npm run backup` takes a full then an incremental backup, ledger traffic goes through the ledger writer's own apply path before and after a time T, and `npm run restore -- --to T --into <port>` brings up a new cluster that serves with every record up to T and none after, the audit chain verifying and the books balancing; prints RPO and RTO measured here. Also: backup refuses a repository the server does not archive to, restore refuses to write over a live data directory.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captureFields, decisionFields } from '../ledger-writer/testing.ts';
import { applyBatch, type ParsedEntry, parseEntry } from '../ledger-writer/write-batch.ts';
import { booksJob } from '../reconciler/books.ts';
import { backupSettingsFrom, configPathOf, serverSettings } from '../scripts/backup/pgbackrest.ts';
import { loadConfig } from '../shared/config.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { seedUser } from './support/fixtures.ts';
import { PGAUDIT_SETTINGS } from './support/pgaudit.ts';
import { freePort, type PostgresCluster, runScript, startPostgresCluster } from './support/processes.ts';

const asRoot = process.getuid?.() === 0;
// Generated, never written down: a public literal here would be a public secret.
const CIPHER_PASS = randomBytes(24).toString('base64url');
const ARCHIVE_TIMEOUT_S = 5;

let backupDir: string;
let cluster: PostgresCluster;
let sql: postgres.Sql;
let env: Record<string, string>;
let financialUrl: string;
const users: { userId: string; cardId: string }[] = [];
const cleanups: (() => void)[] = [];

function postgresOwned(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  if (asRoot) execFileSync('chown', ['postgres:postgres', dir]);
  return dir;
}

/** Ledger traffic through the ledger writer's parse and apply: approvals, then a capture of every third. */
async function traffic(tag: string, count: number): Promise<string[]> {
  const entry = (fields: string[], i: number): ParsedEntry => {
    const map: Record<string, string> = {};
    for (let k = 0; k + 1 < fields.length; k += 2) map[fields[k]!] = fields[k + 1]!;
    const parsed = parseEntry({ stream: 'drill', id: `${Date.now()}-${i}`, fields: map });
    if (!parsed.ok) throw new Error(parsed.error);
    return parsed.entry;
  };
  const eventIds: string[] = [];
  const decisions: ParsedEntry[] = [];
  const captures: ParsedEntry[] = [];
  for (let i = 0; i < count; i++) {
    const user = users[i % users.length]!;
    const eventId = `evt_${tag}_${i}`;
    const authorizationId = `iauth_${tag}_${i}`;
    const grantedCents = 1_000n + BigInt(i);
    eventIds.push(eventId);
    decisions.push(entry(decisionFields({ ...user, grantedCents, eventId, authorizationId }), i));
    if (i % 3 === 0) {
      const capture = captureFields({
        ...user,
        authorizationId,
        amountCents: grantedCents - 100n,
        heldBeforeCents: grantedCents,
        eventId: `evt_${tag}_cap_${i}`,
      });
      captures.push(entry(capture, count + i));
    }
  }
  for (let i = 0; i < decisions.length; i += 10) await applyBatch(sql, decisions.slice(i, i + 10));
  await applyBatch(sql, captures);
  return eventIds;
}

/** Closes the current WAL segment and waits until pgBackRest has archived it; returns the ms it took. */
async function archiveNow(): Promise<number> {
  const [{ segment }] = (await sql`select pg_walfile_name(pg_current_wal_lsn()) as segment`) as unknown as [
    { segment: string },
  ];
  const startedMs = Date.now();
  await sql`select pg_switch_wal()`;
  for (;;) {
    const [row] = await sql<{ last: string | null; failed: number }[]>`
      select last_archived_wal as last, failed_count::int as failed from pg_stat_archiver`;
    if (row?.last != null && row.last >= segment) return Date.now() - startedMs;
    if (Date.now() - startedMs > 30_000)
      throw new Error(`segment ${segment} not archived in 30 s: ${JSON.stringify(row)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

beforeAll(async () => {
  backupDir = postgresOwned('credana-backup-');
  cleanups.push(() => rmSync(backupDir, { recursive: true, force: true }));
  const settings = backupSettingsFrom(
    loadConfig({
      NODE_ENV: 'test',
      BACKUP_DIR: backupDir,
      BACKUP_ARCHIVE_TIMEOUT_S: String(ARCHIVE_TIMEOUT_S),
    }),
  );
  cluster = await startPostgresCluster({ settings: { ...serverSettings(settings), ...PGAUDIT_SETTINGS } });
  cleanups.push(() => cluster.destroy());
  financialUrl = cluster.url.replace(/\/postgres$/, '/credana');
  await ensureDatabase(financialUrl);
  await migrateDatabase(financialUrl);
  sql = postgres(financialUrl, { max: 2, onnotice: () => {} });
  await sql`create extension if not exists pgaudit`;
  for (let i = 0; i < 3; i++) users.push(await seedUser(sql));
  env = {
    PATH: process.env['PATH'] ?? '',
    NODE_ENV: 'test',
    DATABASE_URL: financialUrl,
    BACKUP_DIR: backupDir,
    BACKUP_ARCHIVE_TIMEOUT_S: String(ARCHIVE_TIMEOUT_S),
    BACKUP_CIPHER_PASS: CIPHER_PASS,
  };
});

afterAll(async () => {
  await sql?.end({ timeout: 5 });
  for (const cleanup of cleanups.reverse()) {
    try {
      cleanup();
    } catch {
      // best effort
    }
  }
});

describe('restore drill', () => {
  it('restores a new cluster to time T: everything up to T, nothing after, chain and books intact', async () => {
    const full = await runScript('scripts/backup/backup.ts', ['--type', 'full'], env);
    expect(full.stderr).toBe('');
    expect(full.code).toBe(0);
    expect(full.stdout).toMatch(/^backup: full backup \d{8}-\d{6}F /m);
    expect(full.stdout).toMatch(/^backup: compression \(zstd\): this backup .* \(\d+\.\d×\)/m);
    process.stdout.write(full.stdout);

    const before = await traffic('a', 30);
    const incr = await runScript('scripts/backup/backup.ts', ['--type', 'incr'], env);
    expect(incr.code, incr.stderr).toBe(0);
    expect(incr.stdout).toMatch(/^backup: incr backup \d{8}-\d{6}F_\d{8}-\d{6}I /m);
    process.stdout.write(incr.stdout);
    before.push(...(await traffic('b', 30)));

    // T: after every commit of a and b, before any of c.
    const [mark] = await sql<{ t: string; last_id: string; last_hash: string; transfers: number }[]>`
      select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as t,
        h.last_id::text, h.last_hash, (select count(*)::int from ledger_transfers) as transfers
      from audit_log_head h where h.singleton`;
    const T = mark!.t;
    const pushMs = await archiveNow();
    const after = await traffic('c', 30);
    await archiveNow(); // recovery must see a commit after T to know where to stop

    const port = await freePort();
    const restoreStartedMs = Date.now();
    const restore = await runScript('scripts/backup/restore.ts', ['--to', T, '--into', String(port)], env);
    const stop = /stop it with: (\S+) -D (\S+) stop/.exec(restore.stdout);
    if (stop !== null) {
      cleanups.push(() =>
        execFileSync(
          ...((asRoot
            ? ['runuser', ['-u', 'postgres', '--', stop[1]!, '-D', stop[2]!, '-m', 'immediate', 'stop']]
            : [stop[1]!, ['-D', stop[2]!, '-m', 'immediate', 'stop']]) as [string, string[]]),
          { stdio: 'pipe' },
        ),
      );
    }
    expect(restore.stderr).toBe('');
    expect(restore.code).toBe(0);
    const restored = postgres(`postgres://postgres@127.0.0.1:${port}/credana`, {
      max: 1,
      onnotice: () => {},
    });
    try {
      const [serving] = await restored<{ recovering: boolean; archive_mode: string }[]>`
        select pg_is_in_recovery() as recovering, current_setting('archive_mode') as archive_mode`;
      const rtoMs = Date.now() - restoreStartedMs;
      expect(serving).toEqual({ recovering: false, archive_mode: 'off' });

      const decisions = await restored<
        { event_id: string }[]
      >`select event_id from decisions order by event_id`;
      expect(decisions.map((d) => d.event_id)).toEqual([...before].sort());
      expect(decisions.some((d) => after.includes(d.event_id))).toBe(false);
      const [counts] = await restored<{ transfers: number; last_id: string; last_hash: string }[]>`
        select (select count(*)::int from ledger_transfers) as transfers, h.last_id::text, h.last_hash
        from audit_log_head h where h.singleton`;
      expect(counts).toEqual({
        transfers: mark!.transfers,
        last_id: mark!.last_id,
        last_hash: mark!.last_hash,
      });
      const [source] = await sql<
        { transfers: number }[]
      >`select count(*)::int as transfers from ledger_transfers`;
      expect(source!.transfers).toBeGreaterThan(mark!.transfers); // c really happened on the source

      expect(await restored`select broken_id, problem from audit_log_verify()`).toEqual([]);
      const books = await booksJob()({
        sql: restored,
        cursor: null,
        now: Date.now,
        checkpoint: async () => {},
      });
      expect(books.findings).toEqual([]);
      expect(books.cursor).toBeNull();
      expect(books.checked).toBeGreaterThan(mark!.transfers);
      // Serving means writable: the copy promoted.
      await seedUser(restored);

      const printable = `${full.stdout}${incr.stdout}${restore.stdout}${restore.stderr}`;
      expect(printable).not.toContain(CIPHER_PASS);
      expect(statSync(configPathOf(backupSettingsFrom(loadConfig(env)))).mode & 0o777).toBe(0o600);
      process.stdout.write(
        `${restore.stdout}restore drill on this machine (2 cores, shared with other test runs: noisy): ` +
          `RTO ${(rtoMs / 1000).toFixed(1)} s from npm run restore to the restored cluster answering; ` +
          `RPO ≤ archive_timeout (${ARCHIVE_TIMEOUT_S} s here, BACKUP_ARCHIVE_TIMEOUT_S default 60 s) + archive-push ` +
          `of one segment (measured ${pushMs} ms for the segment holding T)\n`,
      );
    } finally {
      await restored.end({ timeout: 5 });
    }
  }, 120_000);

  it('refuses to restore over a non-empty folder such as the live data directory, in one line', async () => {
    const live = await runScript(
      'scripts/backup/restore.ts',
      ['--to', '2026-01-01T00:00:00Z', '--into', cluster.dataDir],
      env,
    );
    expect(live.code).toBe(78);
    expect(live.stderr).toMatch(/^restore: .* is not empty: restore into a new or empty folder\n$/);
    expect(readdirSync(cluster.dataDir)).toContain('PG_VERSION');
    const [alive] = await sql<{ one: number }[]>`select 1 as one`;
    expect(alive?.one).toBe(1);
  });

  it('refuses to back up into a repository the server does not archive its WAL to, in one line, writing no backup', async () => {
    // Backups without the WAL to replay them restore to no point in time at all.
    const dir = postgresOwned('credana-backup-elsewhere-');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const result = await runScript('scripts/backup/backup.ts', ['--type', 'full'], {
      ...env,
      BACKUP_DIR: dir,
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^backup: PostgreSQL at DATABASE_URL does not archive its WAL to this repository, .*archive_command does not push to this repository/,
    );
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(readdirSync(path.join(dir, 'repo'))).toEqual([]);
  });
});
