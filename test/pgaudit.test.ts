// Proves pgaudit records what a superuser does to the books: on a private PostgreSQL 15 with pgaudit loaded as docs/operations.md asks (role, ddl, write), a superuser who disables the ledger's append-only triggers and UPDATEs ledger_entries, and grants a role, appears in the server log with the statement, the table, the role and the database — and a plain SELECT does not (the classes are what is configured, not everything).
import { readFileSync } from 'node:fs';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decisionFields } from '../ledger-writer/testing.ts';
import { applyBatch, parseEntry } from '../ledger-writer/write-batch.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { seedUser } from './support/fixtures.ts';
import { PGAUDIT_SETTINGS } from './support/pgaudit.ts';
import { type PostgresCluster, startPostgresCluster } from './support/processes.ts';

let cluster: PostgresCluster;
let sql: postgres.Sql;
let userId: string;

/** Waits until the server log has a line matching `pattern` (the logger writes it asynchronously). */
async function logLine(pattern: RegExp): Promise<string> {
  const until = Date.now() + 10_000;
  for (;;) {
    const line = readFileSync(cluster.logPath, 'utf8')
      .split('\n')
      .find((l) => pattern.test(l));
    if (line !== undefined) return line;
    if (Date.now() > until) throw new Error(`no server log line matches ${pattern}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

beforeAll(async () => {
  cluster = await startPostgresCluster({ settings: PGAUDIT_SETTINGS });
  const url = cluster.url.replace(/\/postgres$/, '/credana');
  await ensureDatabase(url);
  await migrateDatabase(url);
  sql = postgres(url, { max: 1, onnotice: () => {} });
  await sql`create extension if not exists pgaudit`;
  const user = await seedUser(sql);
  userId = user.userId;
  const fields = decisionFields({ ...user, grantedCents: 2_500n, eventId: 'evt_pgaudit_1' });
  const map: Record<string, string> = {};
  for (let k = 0; k + 1 < fields.length; k += 2) map[fields[k]!] = fields[k + 1]!;
  const parsed = parseEntry({ stream: 'pgaudit', id: '1-1', fields: map });
  if (!parsed.ok) throw new Error(parsed.error);
  await applyBatch(sql, [parsed.entry]);
});

afterAll(async () => {
  await sql?.end({ timeout: 5 });
  cluster?.destroy();
});

describe('pgaudit on the financial database', () => {
  it('logs a superuser rewriting a ledger entry: the DDL that disables the guard and the UPDATE itself', async () => {
    const [entry] = await sql<
      { id: string }[]
    >`select id::text from ledger_entries where user_id = ${userId} limit 1`;
    expect(entry).toBeDefined();
    await sql.begin(async (tx) => {
      await tx.unsafe('alter table ledger_entries disable trigger user');
      await tx.unsafe(
        `update ledger_entries set amount_cents = amount_cents + 1 where id = ${Number(entry!.id)}`,
      );
      await tx.unsafe('alter table ledger_entries enable trigger user');
    });

    const update = await logLine(/AUDIT: SESSION,.*,WRITE,UPDATE,TABLE,public\.ledger_entries,/);
    expect(update).toContain('postgres@credana ');
    expect(update).toContain(
      `update ledger_entries set amount_cents = amount_cents + 1 where id = ${entry!.id}`,
    );
    const ddl = await logLine(/AUDIT: SESSION,.*,DDL,ALTER TABLE,TABLE,public\.ledger_entries,/);
    expect(ddl).toContain('alter table ledger_entries disable trigger user');
  });

  it('logs role changes and ordinary writes to the balances, and not reads', async () => {
    await sql.unsafe('create role pgaudit_probe_reader nologin');
    await sql.unsafe('grant select on credit_accounts to pgaudit_probe_reader');
    await sql`update credit_accounts set updated_at = now() where user_id = ${userId}`;
    await sql`select holds_cents from credit_accounts where user_id = ${userId} /* pgaudit-read-probe */`;

    expect(await logLine(/AUDIT: SESSION,.*,ROLE,CREATE ROLE,.*create role pgaudit_probe_reader/)).toContain(
      'postgres@credana ',
    );
    await logLine(/AUDIT: SESSION,.*,ROLE,GRANT,.*grant select on credit_accounts to pgaudit_probe_reader/);
    await logLine(
      /AUDIT: SESSION,.*,WRITE,UPDATE,TABLE,public\.credit_accounts,update credit_accounts set updated_at/,
    );
    // Everything above was logged by now; a read is not in the configured classes.
    const log = readFileSync(cluster.logPath, 'utf8');
    expect(log).not.toMatch(/AUDIT: .*pgaudit-read-probe/);
  });
});
