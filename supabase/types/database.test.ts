// Proves the web app's Database types match the migrations: builds a database from supabase/migrations and compares every public table and view, column type, nullability, default and check-constraint value list with PUBLIC_TABLES (from which the types derive).
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { createSupabaseTestDatabase, type SupabaseTestDatabase } from '../tests/harness.ts';
import {
  type ColumnSpec,
  type Database,
  PUBLIC_TABLES,
  PUBLIC_VIEWS,
  type Tables,
  type TablesInsert,
} from './database.ts';

let db: SupabaseTestDatabase;

beforeAll(async () => {
  db = await createSupabaseTestDatabase();
});

afterAll(async () => {
  await db?.close();
});

interface ColumnRow {
  table_name: string;
  column_name: string;
  data_type: string;
  udt_name: string;
  is_nullable: 'YES' | 'NO';
  column_default: string | null;
}

function pgType(row: ColumnRow): string {
  if (row.data_type === 'ARRAY') return `${row.udt_name.replace(/^_/, '')}[]`;
  if (row.data_type === 'timestamp with time zone') return 'timestamptz';
  return row.data_type;
}

/** Parses `CHECK ((kind = ANY (ARRAY['a'::text, 'b'::text])))` into ['kind', ['a', 'b']]. */
function inList(definition: string): [string, string[]] | null {
  const match = /^CHECK \(\(\(?(\w+) = ANY \(ARRAY\[(.+)\]\)\)\)?\)$/.exec(definition);
  if (match === null) return null;
  const values = [...match[2]!.matchAll(/'([^']*)'::text/g)].map((m) => m[1]!);
  return [match[1]!, values];
}

describe('Database types against the migrations', () => {
  it('lists exactly the tables of the public schema', async () => {
    const rows = await db.sql<{ table_name: string }[]>`
      select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'
      order by 1`;
    expect(rows.map((r) => r.table_name)).toEqual(Object.keys(PUBLIC_TABLES).sort());
  });

  it('lists exactly the views of the public schema, column by column', async () => {
    const rows = await db.sql<ColumnRow[]>`
      select c.table_name, c.column_name, c.data_type, c.udt_name, c.is_nullable, c.column_default
      from information_schema.columns c
      join information_schema.tables t using (table_schema, table_name)
      where c.table_schema = 'public' and t.table_type = 'VIEW' order by c.table_name, c.ordinal_position`;
    const actual: Record<string, Record<string, ColumnSpec>> = {};
    for (const row of rows) {
      actual[row.table_name] ??= {};
      actual[row.table_name]![row.column_name] = {
        type: pgType(row) as ColumnSpec['type'],
        nullable: row.is_nullable === 'YES',
        hasDefault: row.column_default !== null,
      };
    }
    expect(actual).toEqual(PUBLIC_VIEWS);
  });

  it('has every column with its type, nullability and default', async () => {
    const rows = await db.sql<ColumnRow[]>`
      select c.table_name, c.column_name, c.data_type, c.udt_name, c.is_nullable, c.column_default
      from information_schema.columns c
      join information_schema.tables t using (table_schema, table_name)
      where c.table_schema = 'public' and t.table_type = 'BASE TABLE' order by c.table_name, c.ordinal_position`;
    const actual: Record<string, Record<string, Omit<ColumnSpec, 'values'>>> = {};
    for (const row of rows) {
      actual[row.table_name] ??= {};
      actual[row.table_name]![row.column_name] = {
        type: pgType(row) as ColumnSpec['type'],
        nullable: row.is_nullable === 'YES',
        hasDefault: row.column_default !== null,
      };
    }
    const declared: Record<string, Record<string, Omit<ColumnSpec, 'values'>>> = {};
    for (const [table, columns] of Object.entries(PUBLIC_TABLES)) {
      declared[table] = {};
      for (const [name, spec] of Object.entries(columns as Record<string, ColumnSpec>)) {
        declared[table]![name] = { type: spec.type, nullable: spec.nullable, hasDefault: spec.hasDefault };
      }
    }
    expect(actual).toEqual(declared);
  });

  it('narrows exactly the columns that a check constraint limits to a list, with the same values', async () => {
    const rows = await db.sql<{ table_name: string; definition: string }[]>`
      select c.relname as table_name, pg_get_constraintdef(k.oid) as definition
      from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and k.contype = 'c'`;
    const actual: Record<string, string[]> = {};
    for (const row of rows) {
      const parsed = inList(row.definition);
      if (parsed !== null) actual[`${row.table_name}.${parsed[0]}`] = parsed[1].sort();
    }
    const declared: Record<string, string[]> = {};
    for (const [table, columns] of Object.entries(PUBLIC_TABLES)) {
      for (const [name, spec] of Object.entries(columns as Record<string, ColumnSpec>)) {
        if (spec.values !== undefined) declared[`${table}.${name}`] = [...spec.values].sort();
      }
    }
    expect(Object.keys(actual).length).toBeGreaterThan(0);
    expect(actual).toEqual(declared);
  });

  it('derives the row and insert types the web app sees (checked by tsc)', () => {
    expectTypeOf<Tables<'card_controls'>['frozen']>().toEqualTypeOf<boolean>();
    expectTypeOf<Tables<'card_controls'>['daily_limit_cents']>().toEqualTypeOf<number | null>();
    expectTypeOf<Tables<'account_activity'>['kind']>().toEqualTypeOf<
      'authorization' | 'capture' | 'refund' | 'deposit' | 'withdrawal' | 'liquidation'
    >();
    expectTypeOf<Tables<'account_summaries'>['health_factor']>().toEqualTypeOf<number | null>();
    expectTypeOf<Database['public']['Views']['support_accounts']['Row']['available_dollars']>().toEqualTypeOf<
      number | null
    >();
    expectTypeOf<Tables<'account_summaries'>['health_notice']>().toEqualTypeOf<
      'warning' | 'liquidation' | null
    >();
    expectTypeOf<TablesInsert<'profiles'>>().toEqualTypeOf<{
      id: string;
      email?: string | null;
      display_name?: string | null;
      avatar_url?: string | null;
      locale?: string;
      kyc_status?: 'none' | 'pending' | 'verified' | 'rejected';
      created_at?: string;
      updated_at?: string;
    }>();
    expect(true).toBe(true);
  });
});
