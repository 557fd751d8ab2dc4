/**
 * Applies `supabase/migrations` with plain SQL, recording each file in the Supabase CLI's own history
 * table (`supabase_migrations.schema_migrations`: version, statements, name), so a database migrated
 * here and one migrated by `supabase db push` agree on what has been applied. Tests use it; on a real
 * project use the CLI (docs/supabase.md).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

export const SUPABASE_MIGRATIONS_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  'migrations',
);

const FILE_NAME = /^(\d{14})_([a-z0-9_]+)\.sql$/;

export interface MigrationFile {
  version: string;
  name: string;
  file: string;
}

export async function listMigrations(dir = SUPABASE_MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  return files.map((file) => {
    const match = FILE_NAME.exec(file);
    if (match === null) throw new Error(`supabase migration ${file} is not named YYYYMMDDHHMMSS_name.sql`);
    return { version: match[1]!, name: match[2]!, file: path.join(dir, file) };
  });
}

/** Applies the pending migrations in version order, each in its own transaction. Returns the versions applied. */
export async function applySupabaseMigrations(url: string, dir = SUPABASE_MIGRATIONS_DIR): Promise<string[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  try {
    await sql.unsafe(`
      create schema if not exists supabase_migrations;
      create table if not exists supabase_migrations.schema_migrations (
        version text primary key, statements text[], name text);`);
    const done = new Set(
      (await sql<{ version: string }[]>`select version from supabase_migrations.schema_migrations`).map(
        (r) => r.version,
      ),
    );
    const applied: string[] = [];
    for (const migration of await listMigrations(dir)) {
      if (done.has(migration.version)) continue;
      const text = await readFile(migration.file, 'utf8');
      await sql.begin(async (tx) => {
        await tx.unsafe(text);
        await tx`insert into supabase_migrations.schema_migrations (version, statements, name)
          values (${migration.version}, ${[text]}, ${migration.name})`;
      });
      applied.push(migration.version);
    }
    return applied;
  } finally {
    await sql.end({ timeout: 5 });
  }
}
