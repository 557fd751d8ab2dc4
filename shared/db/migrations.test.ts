// Proves drizzle/ builds a working financial database from nothing: migrates an empty database twice on the real PostgreSQL, then checks its tables, partitions, indexes and roles, runs each service role's needs and forbidden acts under SET ROLE, and attacks the append-only audit chain, the balanced ledger, the partition job and the summary view.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { is } from 'drizzle-orm';
import { getTableConfig, PgTable } from 'drizzle-orm/pg-core';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropDatabase } from '../../test/support/db.ts';
import { adminUrl, withDatabase } from '../../test/support/env.ts';
import { MIGRATIONS_DIR, migrateDatabase } from './migrate.ts';
import { addMonths, ensureCardEventPartitions, monthStartUtc } from './partitions.ts';
import * as schema from './schema.ts';

const ROLES = [
  'credana_hot_path',
  'credana_ledger_writer',
  'credana_indexer',
  'credana_reconciliation',
  'credana_support_ro',
] as const;
type Role = (typeof ROLES)[number];

/** The tables drizzle-kit generates 0000 from; the database must hold each exactly. */
const SCHEMA_TABLES = (Object.values(schema) as unknown[]).filter((value): value is PgTable =>
  is(value, PgTable),
);
const USER_ID = '00000000-0000-4000-8000-000000000001';
const OPTIONS = { onnotice: () => {}, connection: { TimeZone: 'UTC' } } as const;

let url = '';
let sql: postgres.Sql;
let relationsBeforeMigrating = -1;
let migratedAt = new Date();

/** `card_events_y2026m11` for the month of `monthStart` (`2026-11-01`). */
function partitionName(monthStart: string): string {
  return `card_events_y${monthStart.slice(0, 4)}m${monthStart.slice(5, 7)}`;
}

class Rollback extends Error {}

/** Runs `statement` as `role` in a transaction that is always rolled back; returns the error, if any. */
async function asRole(role: Role, statement: string): Promise<postgres.PostgresError | null> {
  try {
    await sql.begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      await tx.unsafe(statement);
      throw new Rollback();
    });
  } catch (error) {
    if (error instanceof Rollback) return null;
    if (error instanceof postgres.PostgresError) return error;
    throw error;
  }
  throw new Error('unreachable: the transaction always rolls back');
}

/** Runs `work` in a superuser transaction that is always rolled back (for tampering without a trace). */
async function inRolledBackTransaction<T>(work: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  let result: { value: T } | undefined;
  try {
    await sql.begin(async (tx) => {
      result = { value: await work(tx) };
      throw new Rollback();
    });
  } catch (error) {
    if (!(error instanceof Rollback)) throw error;
  }
  if (result === undefined) throw new Error('the transaction did not run');
  return result.value;
}

async function errorOf(promise: Promise<unknown>): Promise<postgres.PostgresError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof postgres.PostgresError) return error;
    throw error;
  }
  throw new Error('expected the statement to fail, but it succeeded');
}

const ledgerPair = (ref: string, debit = 100, credit = -100) => `
  with t as (insert into ledger_transfers (ref, kind, user_id) values ('${ref}', 'hold', '${USER_ID}') returning id)
  insert into ledger_entries (transfer_id, account, user_id, amount_cents)
  select id, 'user_holds', '${USER_ID}'::uuid, ${debit} from t
  union all select id, 'user_available', '${USER_ID}'::uuid, ${credit} from t`;
const auditInsert = `insert into audit_log (actor, action, entity_type, entity_id, data)
  values ('svc', 'probe', 'user', '${USER_ID}', '{"n": 1}')`;
const cardEventInsert = (id: string) => `insert into card_events (id, type, user_id, payload, created_at)
  values ('${id}', 'issuing_authorization.created', '${USER_ID}', '{}', now())`;

beforeAll(async () => {
  // The test-support naming (creation time in base 36 first), so a killed run's leftover is cleaned up.
  const name = `credana_t_${Math.floor(Date.now() / 1000).toString(36)}_mig${randomBytes(4).toString('hex')}`;
  url = withDatabase(name);
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  try {
    // template0: truly empty, unlike template1, which a cluster may have been given objects in.
    await admin.unsafe(`create database "${name}" template template0`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  sql = postgres(url, { max: 8, ...OPTIONS });
  const [before] = await sql<{ n: number }[]>`
    select count(*)::int as n from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public'`;
  relationsBeforeMigrating = before?.n ?? -1;
  migratedAt = new Date();
  await migrateDatabase(url);
  await migrateDatabase(url);
  await seed();
});

afterAll(async () => {
  await sql?.end({ timeout: 5 });
  if (url !== '') await dropDatabase(url);
});

async function seed(): Promise<void> {
  await sql.unsafe(`
    insert into users (id, credit_limit_cents, daily_limit_cents) values ('${USER_ID}', 2500000, 500000);
    insert into cards (id, user_id) values ('ic_1', '${USER_ID}');
    insert into wallets (chain_id, address, user_id) values (31337, '0x${'a'.repeat(40)}', '${USER_ID}');
    insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals,
      ltv_bps, liquidation_threshold_bps, price_age_max_s)
      values ('WETH', 31337, '0x${'b'.repeat(40)}', 18, '0x${'c'.repeat(40)}', 8, 8000, 8250, 3600);
    insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', 1, 300000000000, now());
    insert into positions (user_id, asset_id, collateral_base) values ('${USER_ID}', 'WETH', 2000000000000000000);
    insert into credit_accounts (user_id, debt_onchain_usdc, holds_cents) values ('${USER_ID}', 2000000000, 1000);
    insert into authorizations (id, user_id, card_id, status, approved, requested_cents, approved_cents,
      held_cents, decision, decision_source)
      values ('iauth_1', '${USER_ID}', 'ic_1', 'pending', true, 1000, 1000, 1000, 'approved', 'redis');
    insert into decisions (id, event_id, authorization_id, user_id, card_id, approved, requested_cents,
      approved_cents, reason, source, latency_us, decided_at)
      values ('dec_1', 'evt_1', 'iauth_1', '${USER_ID}', 'ic_1', true, 1000, 1000, 'ok', 'redis', 900, now());
    insert into chain_blocks (chain_id, number, hash, parent_hash, timestamp) values (31337, 1, '0x01', '0x00', 1);
    insert into chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address,
      event_name, args) values (31337, '0x01', 0, 1, '0xt1', '0xvault', 'Deposited', '{}');
    insert into indexer_cursors (id, chain_id, block_number, block_hash) values ('vault', 31337, 1, '0x01');
    insert into settlements (ref, user_id, amount_cents, amount_usdc) values ('ipi_1', '${USER_ID}', 1000, 10000000);
    insert into reconciliation_runs (job, status) values ('holds', 'ok');
  `);
  await sql.unsafe(ledgerPair('seed'));
  await sql.unsafe(cardEventInsert('evt_seed'));
}

describe('applying the migrations', () => {
  it('starts from an empty database and records each migration once, even when run twice', async () => {
    expect(relationsBeforeMigrating).toBe(0);
    const journal = JSON.parse(readFileSync(path.join(MIGRATIONS_DIR, 'meta/_journal.json'), 'utf8')) as {
      entries: unknown[];
    };
    const [applied] = await sql<{ n: number }[]>`select count(*)::int as n from drizzle.__drizzle_migrations`;
    expect(applied?.n).toBe(journal.entries.length);
    // A third run is a no-op too: nothing is re-applied (a re-run of 0001 would fail on CREATE TABLE).
    await migrateDatabase(url);
    const [again] = await sql<{ n: number }[]>`select count(*)::int as n from drizzle.__drizzle_migrations`;
    expect(again?.n).toBe(journal.entries.length);
    const [head] = await sql<{ n: number }[]>`select count(*)::int as n from audit_log_head`;
    expect(head?.n).toBe(1);
  });

  it('creates every table of schema.ts with exactly its columns, plus the custom ones', async () => {
    const tables = SCHEMA_TABLES;
    expect(tables.length).toBeGreaterThan(10);
    const columns = await sql<{ table_name: string; column_name: string }[]>`
      select table_name, column_name from information_schema.columns where table_schema = 'public'`;
    const byTable = new Map<string, string[]>();
    for (const row of columns)
      byTable.set(row.table_name, [...(byTable.get(row.table_name) ?? []), row.column_name]);
    for (const table of tables) {
      const config = getTableConfig(table);
      expect(byTable.get(config.name)?.sort(), config.name).toEqual(config.columns.map((c) => c.name).sort());
    }
    const kinds = await sql<{ relname: string; relkind: string }[]>`
      select c.relname, c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relname in ('card_events', 'card_events_default', 'audit_log_head',
        'user_position_summary')`;
    expect(Object.fromEntries(kinds.map((k) => [k.relname, k.relkind]))).toEqual({
      card_events: 'p',
      card_events_default: 'r',
      audit_log_head: 'r',
      user_position_summary: 'm',
    });
  });

  it('creates the default partition and monthly UTC partitions from last month to three months ahead', async () => {
    const partitions = await sql<{ name: string; bound: string }[]>`
      select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound
      from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'card_events'::regclass order by c.relname`;
    const bounds = new Map(partitions.map((p) => [p.name, p.bound]));
    expect(bounds.get('card_events_default')).toBe('DEFAULT');
    const thisMonth = monthStartUtc(migratedAt);
    for (let offset = -1; offset <= 3; offset++) {
      const month = addMonths(thisMonth, offset);
      expect(bounds.get(partitionName(month)), month).toBe(
        `FOR VALUES FROM ('${month} 00:00:00+00') TO ('${addMonths(month, 1)} 00:00:00+00')`,
      );
    }
    // Each month's first microsecond lands in that month, the microsecond before in the previous one.
    const nextMonth = addMonths(thisMonth, 1);
    const landed = await inRolledBackTransaction(async (tx) => {
      const rows = await tx<{ partition: string }[]>`
        insert into card_events (id, type, payload, created_at) values
          ('evt_edge_1', 't', '{}', ${`${nextMonth}T00:00:00Z`}::timestamptz - interval '1 microsecond'),
          ('evt_edge_2', 't', '{}', ${`${nextMonth}T00:00:00Z`}::timestamptz)
        returning tableoid::regclass::text as partition`;
      return rows.map((row) => row.partition);
    });
    expect(landed).toEqual([partitionName(thisMonth), partitionName(nextMonth)]);
  });

  it('creates the indexes, including card_events (user_id, created_at DESC) on every partition', async () => {
    const indexes = await sql<{ tablename: string; indexname: string; indexdef: string }[]>`
      select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'`;
    const byName = new Map(indexes.map((i) => [i.indexname, i]));
    for (const table of SCHEMA_TABLES) {
      const config = getTableConfig(table);
      for (const index of config.indexes) {
        expect(byName.get(index.config.name ?? '')?.tablename, index.config.name).toBe(config.name);
      }
    }
    // ON ONLY: the parent's index is partitioned; each partition carries an attached copy (checked below).
    expect(byName.get('card_events_user_created_idx')?.indexdef).toMatch(
      /ON ONLY public\.card_events USING btree \(user_id, created_at DESC\)$/,
    );
    expect(byName.get('card_events_pkey')?.indexdef).toMatch(/UNIQUE INDEX .* \(id, created_at\)$/);
    expect(byName.get('card_events_object_idx')?.indexdef).toMatch(/\(object_id\)$/);
    expect(byName.get('user_position_summary_user_idx')?.indexdef).toMatch(
      /^CREATE UNIQUE INDEX .*\(user_id\)$/,
    );
    expect(byName.get('decisions_event_id_idx')?.indexdef).toMatch(/^CREATE UNIQUE INDEX/);
    expect(byName.get('ledger_transfers_ref_idx')?.indexdef).toMatch(/^CREATE UNIQUE INDEX/);
    // A partitioned index exists once per partition; queries on a partition use its own copy.
    const [counts] = await sql<{ partitions: number; indexed: number }[]>`
      select (select count(*)::int from pg_inherits where inhparent = 'card_events'::regclass) as partitions,
             (select count(*)::int from pg_inherits where inhparent = 'card_events_user_created_idx'::regclass)
               as indexed`;
    expect(counts?.indexed).toBe(counts?.partitions);
    // A partitioned index is valid only once every partition has its copy attached.
    const [valid] = await sql<{ valid: boolean }[]>`
      select indisvalid as valid from pg_index where indexrelid = 'card_events_user_created_idx'::regclass`;
    expect(valid?.valid).toBe(true);
  });
});

describe('service roles', () => {
  it('exist as plain login roles that own nothing, belong to nothing (reconciliation: only credana_analytics, without inheriting) and do not bypass RLS', async () => {
    const roles = await sql<
      {
        rolname: string;
        rolsuper: boolean;
        rolcanlogin: boolean;
        rolcreaterole: boolean;
        rolcreatedb: boolean;
        rolbypassrls: boolean;
        rolinherit: boolean;
        memberships: string[];
      }[]
    >`select rolname, rolsuper, rolcanlogin, rolcreaterole, rolcreatedb, rolbypassrls, rolinherit,
        array(select m.roleid::regrole::text from pg_auth_members m where m.member = r.oid) as memberships
      from pg_roles r where rolname = any(${[...ROLES]}) order by rolname`;
    expect(roles.map((r) => r.rolname)).toEqual([...ROLES].sort());
    for (const role of roles) {
      // Analytics ingestion runs in the reconciliation scheduler and reads after SET ROLE
      // credana_analytics (drizzle/0012); reconciliation does not inherit that role's policies.
      const reconciliation = role.rolname === 'credana_reconciliation';
      expect(role, role.rolname).toMatchObject({
        rolsuper: false,
        rolcanlogin: true,
        rolcreaterole: false,
        rolcreatedb: false,
        rolbypassrls: false,
        rolinherit: !reconciliation,
        memberships: reconciliation ? ['credana_analytics'] : [],
      });
    }
    const [owned] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_class where relowner in (select oid from pg_roles where rolname = any(${[...ROLES]}))`;
    expect(owned?.n).toBe(0);
  });

  it('can each log in on their own (trust auth on 127.0.0.1) and see themselves as the user', async () => {
    for (const role of ROLES) {
      const asUser = new URL(url);
      asUser.username = role;
      const client = postgres(asUser.toString(), { max: 1, ...OPTIONS });
      try {
        const [row] = await client<{ who: string }[]>`select current_user as who`;
        expect(row?.who).toBe(role);
      } finally {
        await client.end({ timeout: 5 });
      }
    }
  });

  const allowed: Record<Role, string[]> = {
    credana_hot_path: [
      'select * from users',
      'select * from cards',
      'select * from wallets',
      'select * from assets',
      'select * from prices',
      'select * from positions',
      'select * from authorizations',
      'select * from decisions',
      `select holds_cents from credit_accounts where user_id = '${USER_ID}' for update`,
      `update credit_accounts set holds_cents = holds_cents + 100, version = version + 1 where user_id = '${USER_ID}'`,
      `insert into authorizations (id, user_id, card_id, status, approved, decision, decision_source)
        values ('iauth_hp', '${USER_ID}', 'ic_1', 'pending', true, 'approved', 'postgres')`,
      `update authorizations set held_cents = 0 where id = 'iauth_1'`,
      `insert into decisions (id, event_id, authorization_id, card_id, approved, requested_cents, approved_cents,
        reason, source, latency_us, decided_at)
        values ('dec_hp', 'evt_hp', 'iauth_1', 'ic_1', true, 1, 1, 'ok', 'postgres', 1, now())`,
      ledgerPair('hold:hp'),
      `select id from ledger_transfers where ref = 'seed'`,
      `${cardEventInsert('evt_hp')} on conflict do nothing`,
      auditInsert,
    ],
    credana_ledger_writer: [
      cardEventInsert('evt_lw'),
      'select * from card_events',
      'select * from ledger_entries',
      'select * from ledger_transfers',
      'select * from settlements',
      `insert into authorizations (id, user_id, card_id, status, approved, decision, decision_source)
        values ('iauth_lw', '${USER_ID}', 'ic_1', 'pending', true, 'stripe', 'stripe')`,
      `update authorizations set status = 'closed', held_cents = 0 where id = 'iauth_1'`,
      `update credit_accounts set unsettled_cents = unsettled_cents + 500 where user_id = '${USER_ID}'`,
      `insert into decisions (id, event_id, authorization_id, card_id, approved, requested_cents, approved_cents,
        reason, source, latency_us, decided_at)
        values ('dec_lw', 'evt_lw', 'iauth_1', 'ic_1', true, 1, 1, 'ok', 'redis', 1, now())`,
      // A fallback's decision replaced by the Redis answer it could not see (0016).
      `update decisions set id = 'dec_lw2', approved = true, approved_cents = 1, reason = 'approved',
        source = 'redis', latency_us = 2, decided_at = now() where event_id = 'evt_lw'`,
      ledgerPair('capture:lw'),
      auditInsert,
    ],
    credana_indexer: [
      `insert into chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address,
        event_name, args) values (31337, '0x02', 0, 2, '0xt2', '0xvault', 'Deposited', '{}')`,
      `update chain_events set applied_at = now() where block_hash = '0x01'`,
      `delete from chain_events where block_hash = '0x01'`,
      `insert into chain_blocks (chain_id, number, hash, parent_hash, timestamp) values (31337, 2, '0x02', '0x01', 2)`,
      'delete from chain_blocks where number = 1',
      `insert into indexer_cursors (id, chain_id, block_number, block_hash) values ('vault', 31337, 2, '0x02')
        on conflict (id) do update set block_number = excluded.block_number, block_hash = excluded.block_hash`,
      `update positions set collateral_base = collateral_base + 1 where user_id = '${USER_ID}'`,
      `delete from positions where user_id = '${USER_ID}'`,
      `insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', 2, 310000000000, now())
        on conflict (asset_id, round_id) do update set answer = excluded.answer`,
      `delete from prices where asset_id = 'WETH' and round_id = 1`,
      `insert into credit_accounts (user_id) values ('${USER_ID}') on conflict do nothing`,
      `select t.ref, e.amount_cents from ledger_transfers t join ledger_entries e on e.transfer_id = t.id`,
      `insert into wallets (chain_id, address, user_id) values (1, '0x${'d'.repeat(40)}', '${USER_ID}')`,
      `update credit_accounts set debt_onchain_usdc = debt_onchain_usdc + 1 where user_id = '${USER_ID}'`,
      `insert into settlements (ref, user_id, amount_cents, amount_usdc) values ('ipi_ix', '${USER_ID}', 1, 10000)`,
      `update settlements set status = 'sent', attempts = attempts + 1 where ref = 'ipi_1'`,
      ledgerPair('settlement:ix'),
      auditInsert,
    ],
    credana_reconciliation: [
      ...[
        'users',
        'cards',
        'wallets',
        'assets',
        'prices',
        'positions',
        'credit_accounts',
        'authorizations',
        'decisions',
        'chain_events',
        'chain_blocks',
        'indexer_cursors',
        'ledger_transfers',
        'ledger_entries',
        'audit_log',
        'audit_log_head',
        'reconciliation_runs',
        'settlements',
        'card_events',
        'user_position_summary',
      ].map((table) => `select count(*) from ${table}`),
      `insert into reconciliation_runs (job, status) values ('holds', 'running') returning id`,
      `update reconciliation_runs set status = 'ok', finished_at = now()`,
      `update credit_accounts set holds_cents = 0 where user_id = '${USER_ID}'`,
      `update authorizations set status = 'expired', held_cents = 0 where id = 'iauth_1'`,
      ledgerPair('adjustment:rc'),
      auditInsert,
      'select * from audit_log_verify()',
      'select refresh_user_position_summary()',
      // Partition upkeep runs on the scheduler as this role (drizzle 0010: the function is SECURITY DEFINER).
      'select card_events_ensure_partitions(current_date, 1)',
      'select * from card_events_partition_status()',
    ],
    // Support sees one user's rows after an audited support_open_user (test/row-security.test.ts).
    credana_support_ro: [
      'select id, status, credit_limit_cents, daily_limit_cents, blocked_mccs from users',
      'select id, user_id, status, frozen, ops_frozen, ops_frozen_at, last4 from cards',
      'select id, user_id, status, held_cents, decision, decline_reason from authorizations',
      'select * from support_user_position_summary',
    ],
  };

  const refused: Record<Role, string[]> = {
    credana_hot_path: [
      'select * from ledger_entries',
      'select * from audit_log',
      'select * from card_events',
      'select * from settlements',
      'select * from chain_events',
      `update card_events set type = 'forged'`,
      `update positions set collateral_base = 0`,
      `insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', 9, 1, now())`,
      `delete from authorizations where id = 'iauth_1'`,
      'update users set credit_limit_cents = 1',
      'truncate credit_accounts',
      'select * from audit_log_verify()',
      'select card_events_ensure_partitions(current_date, 1)',
    ],
    credana_ledger_writer: [
      `update card_events set type = 'forged'`,
      'delete from card_events',
      'update positions set collateral_base = 0',
      `insert into chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address,
        event_name, args) values (31337, '0x09', 0, 9, '0xt9', '0xvault', 'Deposited', '{}')`,
      `update settlements set status = 'sent'`,
      'select * from audit_log',
      'select * from wallets',
      `insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', 9, 1, now())`,
      'update users set credit_limit_cents = 1',
      // Only a decision's outcome may be replaced, never what it was about.
      `update decisions set event_id = 'evt_forged'`,
      `update decisions set requested_cents = 0`,
      'delete from decisions',
    ],
    credana_indexer: [
      `insert into authorizations (id, card_id, status, approved, decision, decision_source)
        values ('iauth_ix', 'ic_1', 'pending', true, 'approved', 'redis')`,
      `update authorizations set held_cents = 0`,
      `insert into decisions (id, event_id, authorization_id, card_id, approved, requested_cents, approved_cents,
        reason, source, latency_us, decided_at)
        values ('dec_ix', 'evt_ix', 'iauth_1', 'ic_1', true, 1, 1, 'ok', 'redis', 1, now())`,
      cardEventInsert('evt_ix'),
      'update users set credit_limit_cents = 1',
      'delete from credit_accounts',
      'delete from settlements',
      'delete from wallets',
      'select * from decisions',
      'select * from audit_log',
      'select * from card_events',
    ],
    credana_reconciliation: [
      `delete from authorizations where id = 'iauth_1'`,
      'update positions set collateral_base = 0',
      cardEventInsert('evt_rc'),
      `insert into chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address,
        event_name, args) values (31337, '0x09', 0, 9, '0xt9', '0xvault', 'Deposited', '{}')`,
      'update users set credit_limit_cents = 1',
      'delete from reconciliation_runs',
      `update audit_log_head set last_hash = 'forged'`,
      'refresh materialized view concurrently user_position_summary',
    ],
    credana_support_ro: [
      'select * from user_position_summary',
      'select ops_frozen_reason from cards',
      'select merchant_name_sealed from authorizations',
      'select * from support_access',
      'select * from credit_accounts',
      'select * from ledger_entries',
      'select * from ledger_transfers',
      'select * from audit_log',
      'select * from card_events',
      'select * from decisions',
      'select * from positions',
      'select * from settlements',
      'update users set credit_limit_cents = 1',
      `insert into authorizations (id, card_id, status, approved, decision, decision_source)
        values ('iauth_s', 'ic_1', 'pending', true, 'approved', 'redis')`,
      auditInsert,
      'select * from audit_log_verify()',
      'select refresh_user_position_summary()',
      'select * from card_events_partition_status()',
    ],
  };

  for (const role of ROLES) {
    it(`${role} can do what its service needs`, async () => {
      for (const statement of allowed[role]) {
        const error = await asRole(role, statement);
        expect(error?.message ?? null, statement).toBeNull();
      }
    });

    it(`${role} is refused what it must not do`, async () => {
      for (const statement of refused[role]) {
        const error = await asRole(role, statement);
        expect(error?.code, statement).toBe('42501');
        expect(error?.message, statement).toMatch(/permission denied|must be owner/);
      }
    });
  }
});

describe('audit_log', () => {
  async function appendAuditRows(
    rows: { actor: string; action: string; data?: Record<string, number> }[],
  ): Promise<bigint[]> {
    const ids: bigint[] = [];
    for (const row of rows) {
      const [inserted] = await sql<{ id: string }[]>`
        insert into audit_log (actor, action, entity_type, entity_id, data)
        values (${row.actor}, ${row.action}, 'user', ${USER_ID}, ${sql.json(row.data ?? { ok: true })})
        returning id`;
      ids.push(BigInt(inserted?.id ?? '0'));
    }
    return ids;
  }

  async function verify(client: postgres.Sql | postgres.TransactionSql = sql) {
    return client<
      { broken_id: string; problem: string }[]
    >`select broken_id::text, problem from audit_log_verify()`;
  }

  it('chains every row to the one before it, across single and multi-row inserts', async () => {
    await appendAuditRows([{ actor: 'a', action: 'one' }]);
    await sql`insert into audit_log (actor, action, entity_type, entity_id, data)
      values ('b', 'two', 'user', 'u', '{}'), ('c', 'three', 'user', 'u', '[1, 2]')`;
    await appendAuditRows([{ actor: 'd', action: 'four' }]);
    const rows = await sql<{ id: string; prev_hash: string; hash: string }[]>`
      select id, prev_hash, hash from audit_log order by id`;
    expect(rows.length).toBeGreaterThanOrEqual(4);
    expect(rows[0]?.prev_hash).toBe('');
    for (let i = 0; i < rows.length; i++) {
      expect(rows[i]?.hash).toMatch(/^[0-9a-f]{64}$/);
      if (i > 0) expect(rows[i]?.prev_hash).toBe(rows[i - 1]?.hash);
    }
    expect(await verify()).toEqual([]);
  });

  it('refuses UPDATE, DELETE and TRUNCATE even to its owner (a superuser here)', async () => {
    await appendAuditRows([{ actor: 'owner-test', action: 'x' }]);
    const [owner] = await sql<{ owner: string; me: string }[]>`
      select pg_get_userbyid(relowner) as owner, current_user as me from pg_class where oid = 'audit_log'::regclass`;
    expect(owner?.owner).toBe(owner?.me);
    for (const statement of [
      `update audit_log set actor = 'someone else'`,
      'delete from audit_log',
      'truncate audit_log',
      'delete from audit_log_head',
      'truncate audit_log_head',
    ]) {
      const error = await errorOf(sql.unsafe(statement));
      expect(error.code, statement).toBe('42501');
      expect(error.message, statement).toMatch(/append-only/);
    }
    expect(await verify()).toEqual([]);
  });

  it('finds a row whose content was changed behind the trigger', async () => {
    const ids = await appendAuditRows([
      { actor: 'ops', action: 'limit', data: { cents: 100 } },
      { actor: 'ops', action: 'limit', data: { cents: 200 } },
      { actor: 'ops', action: 'limit', data: { cents: 300 } },
    ]);
    const target = ids[1]?.toString();
    const problems = await inRolledBackTransaction(async (tx) => {
      await tx`alter table audit_log disable trigger audit_log_append_only`;
      await tx`update audit_log set data = '{"cents": 20000}' where id = ${target ?? ''}`;
      await tx`alter table audit_log enable trigger audit_log_append_only`;
      return verify(tx);
    });
    expect(problems).toEqual([{ broken_id: target, problem: "hash does not match the row's content" }]);
    expect(await verify()).toEqual([]);
  });

  it('finds text moved across a field boundary (no delimiter ambiguity)', async () => {
    const [id] = await appendAuditRows([{ actor: 'ops|refund', action: 'approve' }]);
    const problems = await inRolledBackTransaction(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update audit_log set actor = 'ops', action = 'refund|approve' where id = ${String(id)}`;
      return verify(tx);
    });
    expect(problems).toEqual([{ broken_id: String(id), problem: "hash does not match the row's content" }]);
  });

  it('finds a rewritten row whose own hash was recomputed, at the next link', async () => {
    const ids = await appendAuditRows([
      { actor: 'x', action: 'a' },
      { actor: 'x', action: 'b' },
    ]);
    const problems = await inRolledBackTransaction(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update audit_log set action = 'forged',
        hash = audit_log_row_hash(prev_hash, id, at, actor, 'forged', entity_type, entity_id, data)
        where id = ${String(ids[0])}`;
      return verify(tx);
    });
    expect(problems).toEqual([
      { broken_id: String(ids[1]), problem: "prev_hash does not match the previous row's hash" },
    ]);
  });

  it('finds a deleted row, in the middle and at the end', async () => {
    const ids = await appendAuditRows([
      { actor: 'y', action: 'a' },
      { actor: 'y', action: 'b' },
      { actor: 'y', action: 'c' },
    ]);
    const middle = await inRolledBackTransaction(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`delete from audit_log where id = ${String(ids[1])}`;
      return verify(tx);
    });
    expect(middle).toEqual([
      { broken_id: String(ids[2]), problem: "prev_hash does not match the previous row's hash" },
    ]);
    const end = await inRolledBackTransaction(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`delete from audit_log where id = ${String(ids[2])}`;
      return verify(tx);
    });
    expect(end).toEqual([
      {
        broken_id: String(ids[2]),
        problem: 'the last row is not the chain head: rows are missing at the end',
      },
    ]);
  });

  it('keeps one unforked chain under concurrent writers on separate connections', async () => {
    const writers = 6;
    const transactionsEach = 15;
    const clients = Array.from({ length: writers }, () => postgres(url, { max: 1, ...OPTIONS }));
    const [before] = await sql<{ n: number }[]>`select count(*)::int as n from audit_log`;
    try {
      await Promise.all(
        clients.map(async (client, w) => {
          for (let t = 0; t < transactionsEach; t++) {
            await client.begin(async (tx) => {
              await tx`insert into audit_log (actor, action, entity_type, entity_id, data)
                values (${`writer-${w}`}, 'first', 'tx', ${String(t)}, '{}')`;
              // Hold the chain head for a moment so the other writers queue behind this transaction.
              await tx`select pg_sleep(0.002)`;
              await tx`insert into audit_log (actor, action, entity_type, entity_id, data)
                values (${`writer-${w}`}, 'second', 'tx', ${String(t)}, '{}')`;
            });
          }
        }),
      );
    } finally {
      await Promise.all(clients.map((client) => client.end({ timeout: 5 })));
    }
    const [after] = await sql<{ n: number; predecessors: number }[]>`
      select count(*)::int as n, count(distinct prev_hash)::int as predecessors from audit_log`;
    expect((after?.n ?? 0) - (before?.n ?? 0)).toBe(writers * transactionsEach * 2);
    // A fork would give two rows the same predecessor.
    expect(after?.predecessors).toBe(after?.n);
    expect(await verify()).toEqual([]);
  });

  it('makes a REPEATABLE READ writer that raced another writer retry instead of forking the chain', async () => {
    const racer = postgres(url, { max: 1, ...OPTIONS });
    try {
      const error = await errorOf(
        sql.begin('isolation level repeatable read', async (tx) => {
          await tx`select count(*) from audit_log`; // takes the snapshot
          await racer`insert into audit_log (actor, action, entity_type, entity_id, data)
            values ('racer', 'wins', 'tx', 'r', '{}')`;
          await tx`insert into audit_log (actor, action, entity_type, entity_id, data)
            values ('stale', 'loses', 'tx', 's', '{}')`;
        }),
      );
      expect(error.code).toBe('40001');
    } finally {
      await racer.end({ timeout: 5 });
    }
    const [counts] = await sql<{ stale: number; racer: number; n: number; predecessors: number }[]>`
      select count(*) filter (where actor = 'stale')::int as stale, count(*) filter (where actor = 'racer')::int as racer,
        count(*)::int as n, count(distinct prev_hash)::int as predecessors from audit_log`;
    expect(counts).toMatchObject({ stale: 0, racer: 1 });
    expect(counts?.predecessors).toBe(counts?.n);
    expect(await verify()).toEqual([]);
  });
});

describe('ledger', () => {
  it('accepts a balanced transfer, with two legs or more', async () => {
    await sql.unsafe(ledgerPair('balanced:1'));
    await sql`
      with t as (insert into ledger_transfers (ref, kind) values ('balanced:3', 'capture') returning id)
      insert into ledger_entries (transfer_id, account, amount_cents)
      select id, 'user_unsettled', 100 from t union all select id, 'user_holds', -60 from t
      union all select id, 'program_card_spend', -40 from t`;
    const rows = await sql<{ ref: string; legs: number; total: string }[]>`
      select t.ref, count(*)::int as legs, sum(e.amount_cents)::text as total
      from ledger_transfers t join ledger_entries e on e.transfer_id = t.id
      where t.ref in ('balanced:1', 'balanced:3') group by t.ref order by t.ref`;
    expect(rows).toEqual([
      { ref: 'balanced:1', legs: 2, total: '0' },
      { ref: 'balanced:3', legs: 3, total: '0' },
    ]);
  });

  it('refuses an unbalanced transfer and keeps none of it', async () => {
    const error = await errorOf(sql.unsafe(ledgerPair('unbalanced', 100, -99)));
    expect(error.code).toBe('23514');
    expect(error.message).toMatch(/unbalanced/);
    const [row] = await sql<
      { n: number }[]
    >`select count(*)::int as n from ledger_transfers where ref = 'unbalanced'`;
    expect(row?.n).toBe(0);
  });

  it('refuses legs split over statements, and offsetting transfers in one statement', async () => {
    const [transfer] = await sql<{ id: string }[]>`
      insert into ledger_transfers (ref, kind) values ('split', 'hold') returning id`;
    const id = transfer?.id ?? '';
    // Every leg of a transfer goes in one statement; the first half alone is unbalanced.
    const half = await errorOf(
      sql`insert into ledger_entries (transfer_id, account, amount_cents) values (${id}, 'a', 100)`,
    );
    expect(half.code).toBe('23514');
    // Two transfers whose legs cancel only across each other are both unbalanced.
    const [other] = await sql<{ id: string }[]>`
      insert into ledger_transfers (ref, kind) values ('split:other', 'hold') returning id`;
    const across = await errorOf(sql`insert into ledger_entries (transfer_id, account, amount_cents)
      values (${id}, 'a', 100), (${other?.id ?? ''}, 'b', -100)`);
    expect(across.code).toBe('23514');
    // Adding an unbalanced leg to an already balanced transfer is refused too.
    await sql.unsafe(ledgerPair('then-more'));
    const extra = await errorOf(sql`insert into ledger_entries (transfer_id, account, amount_cents)
      select id, 'a', 1 from ledger_transfers where ref = 'then-more'`);
    expect(extra.code).toBe('23514');
  });

  it('refuses UPDATE, DELETE and TRUNCATE of entries and transfers, even to the owner', async () => {
    for (const statement of [
      'update ledger_entries set amount_cents = 0',
      'delete from ledger_entries',
      'truncate ledger_entries cascade',
      `update ledger_transfers set ref = 'x'`,
      'delete from ledger_transfers',
      'truncate ledger_transfers cascade',
    ]) {
      const error = await errorOf(sql.unsafe(statement));
      expect(error.code, statement).toBe('42501');
      expect(error.message, statement).toMatch(/append-only/);
    }
  });
});

describe('card_events partitions', () => {
  it('after the partition job, an event two months ahead lands in its month and the default stays empty', async () => {
    const now = new Date();
    const result = await ensureCardEventPartitions(sql, { now, monthsAhead: 5 });
    const thisMonth = monthStartUtc(now);
    // The migration made up to three months ahead; the job adds the fourth and fifth.
    expect(result.created).toEqual([
      partitionName(addMonths(thisMonth, 4)),
      partitionName(addMonths(thisMonth, 5)),
    ]);
    expect(result.defaultRows).toBe(0n);
    const twoAhead = addMonths(thisMonth, 2);
    const fiveAhead = addMonths(thisMonth, 5);
    const landed = await sql<{ id: string; partition: string }[]>`
      insert into card_events (id, type, payload, created_at) values
        ('evt_two_ahead', 'issuing_authorization.created', '{}', ${`${twoAhead.slice(0, 8)}15T12:00:00Z`}),
        ('evt_five_ahead', 'issuing_authorization.created', '{}', ${`${fiveAhead.slice(0, 8)}28T23:59:59Z`})
      returning id, tableoid::regclass::text as partition`;
    expect(landed).toEqual([
      { id: 'evt_two_ahead', partition: partitionName(twoAhead) },
      { id: 'evt_five_ahead', partition: partitionName(fiveAhead) },
    ]);
    const [count] = await sql<{ n: number }[]>`select count(*)::int as n from card_events_default`;
    expect(count?.n).toBe(0);
    // The same event id with the same Stripe `created` is one row: the key is (id, created_at).
    const duplicate = await errorOf(sql`insert into card_events (id, type, payload, created_at)
      values ('evt_two_ahead', 'x', '{}', ${`${twoAhead.slice(0, 8)}15T12:00:00Z`})`);
    expect(duplicate.code).toBe('23505');
  });
});

describe('user_position_summary', () => {
  it('refreshes CONCURRENTLY, directly as owner and through the function as reconciliation', async () => {
    await sql`update credit_accounts set holds_cents = 4321, unsettled_cents = 77 where user_id = ${USER_ID}`;
    await sql`refresh materialized view concurrently user_position_summary`;
    const [first] = await sql<{ holds_cents: string; unsettled_cents: string; debt_onchain_usdc: string }[]>`
      select holds_cents::text, unsettled_cents::text, debt_onchain_usdc from user_position_summary
      where user_id = ${USER_ID}`;
    expect(first).toEqual({ holds_cents: '4321', unsettled_cents: '77', debt_onchain_usdc: '2000000000' });

    await sql`update credit_accounts set holds_cents = 99 where user_id = ${USER_ID}`;
    await sql.begin(async (tx) => {
      await tx`set local role credana_reconciliation`;
      await tx`select refresh_user_position_summary()`;
    });
    const [second] = await sql<{ holds_cents: string; open_authorizations: string; assets_held: string }[]>`
      select holds_cents::text, open_authorizations::text, assets_held::text from user_position_summary
      where user_id = ${USER_ID}`;
    expect(second).toEqual({ holds_cents: '99', open_authorizations: '1', assets_held: '1' });
  });
});
