// Proves the row and column rules of drizzle/0012 by connecting as each service role (trust authentication, the role as the URL's username; the other tests mostly connect as the superuser, which bypasses RLS): two users' rows in every financial table, then for each role what it reads (rows and columns), what it is refused (permission denied for a hidden column, zero rows for a hidden row — each checked against a row the role must see, so an empty answer cannot pass by accident), that it cannot write, that support sees one user only after an audited request and cannot forge one, that analytics ingestion runs as credana_analytics, and that no service role bypasses RLS or owns a table.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAsAnalytics, refreshAnalytics, setUpAnalytics } from '../reconciler/analytics/index.ts';
import { createReconcileServices, runJob } from '../reconciler/index.ts';
import { createDatabase, type Database, type Sql } from '../shared/db/client.ts';
import { cloneTemplateDatabase, dropDatabase, setUpServices, type TestServices } from './support/db.ts';
import { testConfig } from './support/hot-path.ts';

const A = '00000000-0000-4000-8000-00000000000a';
const B = '00000000-0000-4000-8000-00000000000b';

/** Every table with rows of one user: RLS is on for each (drizzle/0012). */
const RLS_TABLES = [
  'users',
  'cards',
  'wallets',
  'positions',
  'credit_accounts',
  'authorizations',
  'decisions',
  'fallback_decisions',
  'card_events',
  'ledger_transfers',
  'ledger_entries',
  'settlements',
  'chain_refunds',
  'withdrawal_approvals',
  'liquidations',
  'audit_log',
  'support_access',
] as const;

/**
 * The policies, by table, as role suffixes (`credana_<suffix>`). Every one is `USING (true)` except
 * support's, which is the opened user. A change of grants changes this list on purpose.
 */
const POLICIES: Record<string, string[]> = {
  audit_log: ['hot_path', 'indexer', 'ledger_writer', 'reconciliation', 'supabase_sync'],
  authorizations: [
    'analytics',
    'hot_path',
    'indexer',
    'ledger_writer',
    'reconciliation',
    'supabase_sync',
    'support_ro',
    'withdrawals',
  ],
  card_events: ['hot_path', 'indexer', 'ledger_writer', 'reconciliation', 'settlement', 'withdrawals'],
  cards: [
    'hot_path',
    'indexer',
    'ledger_writer',
    'reconciliation',
    'supabase_sync',
    'support_ro',
    'withdrawals',
  ],
  chain_refunds: ['indexer', 'reconciliation', 'settlement'],
  credit_accounts: [
    'analytics',
    'hot_path',
    'indexer',
    'ledger_writer',
    'liquidator',
    'reconciliation',
    'settlement',
    'supabase_sync',
    'withdrawals',
  ],
  decisions: [
    'analytics',
    'hot_path',
    'indexer',
    'ledger_writer',
    'reconciliation',
    'supabase_sync',
    'withdrawals',
  ],
  fallback_decisions: ['hot_path', 'indexer', 'reconciliation', 'withdrawals'],
  ledger_entries: [
    'analytics',
    'hot_path',
    'indexer',
    'ledger_writer',
    'reconciliation',
    'settlement',
    'supabase_sync',
    'withdrawals',
  ],
  ledger_transfers: [
    'analytics',
    'hot_path',
    'indexer',
    'ledger_writer',
    'reconciliation',
    'settlement',
    'supabase_sync',
    'withdrawals',
  ],
  liquidations: ['liquidator', 'reconciliation'],
  positions: [
    'analytics',
    'hot_path',
    'indexer',
    'ledger_writer',
    'liquidator',
    'reconciliation',
    'settlement',
    'supabase_sync',
    'withdrawals',
  ],
  settlements: ['indexer', 'ledger_writer', 'reconciliation', 'settlement'],
  users: [
    'analytics',
    'hot_path',
    'indexer',
    'ledger_writer',
    'reconciliation',
    'settlement',
    'supabase_sync',
    'support_ro',
    'withdrawals',
  ],
  wallets: ['hot_path', 'indexer', 'liquidator', 'reconciliation', 'settlement', 'withdrawals'],
  withdrawal_approvals: ['reconciliation', 'withdrawals'],
};

/** The services that act on any user: every row of what they were granted. */
const ALL_ROWS_ROLES = [
  'credana_hot_path',
  'credana_ledger_writer',
  'credana_indexer',
  'credana_settlement',
  'credana_liquidator',
  'credana_withdrawals',
  'credana_reconciliation',
  'credana_supabase_sync',
  'credana_analytics',
] as const;

let services: TestServices;
let admin: Sql;
const open: Database[] = [];

function roleUrl(role: string): string {
  const url = new URL(services.databaseUrl);
  url.username = role;
  url.password = '';
  return url.toString();
}

/** One connection logged in as `role`: a session, so settings and the backend pid stay put. */
function connect(role: string): Sql {
  const database = createDatabase({ url: roleUrl(role), poolMax: 1, applicationName: 'row-security-test' });
  open.push(database);
  return database.sql;
}

/** The SQLSTATE a statement fails with, or null when it succeeds. */
async function failure(sql: Sql, statement: string): Promise<string | null> {
  try {
    await sql.unsafe(statement);
    return null;
  } catch (error) {
    return (error as { code?: string }).code ?? 'no code';
  }
}

async function count(sql: Sql, from: string): Promise<number> {
  const [row] = await sql.unsafe<{ n: number }[]>(`select count(*)::int as n from ${from}`);
  return row?.n ?? -1;
}

async function seed(sql: Sql): Promise<void> {
  const createdS = Math.floor(Date.now() / 1000) - 60;
  await sql.unsafe(`
    insert into users (id, credit_limit_cents, daily_limit_cents) values ('${A}', 100000, 50000), ('${B}', 200000, 50000);
    insert into cards (id, user_id, ops_frozen, ops_frozen_reason, ops_frozen_by, ops_frozen_at, last4) values
      ('ic_a', '${A}', true, 'AML review 17: do not tell the cardholder', 'op-alice', now(), '4242'),
      ('ic_b', '${B}', false, null, null, null, '1881');
    insert into wallets (chain_id, address, user_id) values
      (31337, '0x${'a'.repeat(40)}', '${A}'), (31337, '0x${'b'.repeat(40)}', '${B}');
    insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
      liquidation_threshold_bps, price_age_max_s) values ('WETH', 31337, '0x${'e'.repeat(40)}', 18, '0x${'f'.repeat(40)}', 8, 7000, 8250, 3600);
    insert into prices (asset_id, round_id, answer, updated_at) values ('WETH', 1, 300000000000, now());
    insert into positions (user_id, asset_id, collateral_base) values ('${A}', 'WETH', 1000000000000000000), ('${B}', 'WETH', 2000000000000000000);
    insert into credit_accounts (user_id, unsettled_cents, holds_cents) values ('${A}', 1000, 500), ('${B}', 2000, 0);
    insert into authorizations (id, user_id, card_id, status, approved, requested_cents, approved_cents, held_cents,
      decision, decision_source, merchant_name_sealed, merchant_category_code, expires_at) values
      ('iauth_a', '${A}', 'ic_a', 'pending', true, 500, 500, 500, 'approved', 'redis', '\\x01'::bytea, '8011', now() + interval '7 days'),
      ('iauth_b', '${B}', 'ic_b', 'closed', true, 2000, 2000, 0, 'approved', 'redis', '\\x01'::bytea, '7995', null);
    insert into decisions (id, event_id, authorization_id, user_id, card_id, approved, requested_cents, approved_cents,
      reason, source, latency_us, decided_at) values
      ('dec_a', 'evt_req_a', 'iauth_a', '${A}', 'ic_a', true, 500, 500, 'approved', 'redis', 900, now()),
      ('dec_b', 'evt_req_b', 'iauth_b', '${B}', 'ic_b', true, 2000, 2000, 'approved', 'redis', 800, now());
    insert into fallback_decisions (decision_id, event_id, authorization_id, user_id, granted_cents, hold_expires_at,
      stored, decided_by) values
      ('fd_a', 'evt_fd_a', 'iauth_a', '${A}', 500, now() + interval '7 days', 'postgres', 'hp-1'),
      ('fd_b', 'evt_fd_b', 'iauth_b', '${B}', 0, now() + interval '7 days', 'postgres', 'hp-1');
    insert into card_events (id, type, user_id, object_id, payload, created_at) values
      ('evt_tx_a', 'issuing_transaction.created', '${A}', 'ipi_a',
        '{"data":{"object":{"created":${createdS},"merchant_data":{"category_code":"5812"},"cardholder":{"name":"Alice Secret","email":"alice@example.com"}}}}',
        to_timestamp(${createdS})),
      ('evt_tx_b', 'issuing_transaction.created', '${B}', 'ipi_b',
        '{"data":{"object":{"created":${createdS},"merchant_data":{"category_code":"7995"},"cardholder":{"name":"Bob Secret"}}}}',
        to_timestamp(${createdS}));
    insert into chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address, event_name,
      args, user_id) values
      (31337, '0x01', 0, 1, '0xt1', '0xvault', 'Deposited', '{"user":"0x${'a'.repeat(40)}"}', '${A}'),
      (31337, '0x01', 1, 1, '0xt1', '0xvault', 'Deposited', '{"user":"0x${'b'.repeat(40)}"}', '${B}');
    with t as (insert into ledger_transfers (ref, kind, user_id) values
      ('lifecycle:evt_tx_a', 'capture', '${A}'), ('lifecycle:evt_tx_b', 'capture', '${B}') returning id, user_id)
    insert into ledger_entries (transfer_id, account, user_id, amount_cents)
      select id, 'user_unsettled', user_id, 1000 from t union all select id, 'stripe_payable', null, -1000 from t;
    insert into settlements (ref, user_id, amount_cents, amount_usdc) values ('ipi_a', '${A}', 1000, 10000000), ('ipi_b', '${B}', 1000, 10000000);
    insert into chain_refunds (ref, transfer_ref, user_id, amount_cents, amount_usdc) values
      ('rf_a', 'lifecycle:evt_rf_a', '${A}', 100, 1000000), ('rf_b', 'lifecycle:evt_rf_b', '${B}', 100, 1000000);
    insert into withdrawal_approvals (chain_id, request_id, user_id, account, asset_id, amount_base, deadline,
      exposure_cents, borrow_power_after_cents) values
      (31337, 1, '${A}', '0x${'a'.repeat(40)}', 'WETH', 1, now(), 0, 1), (31337, 2, '${B}', '0x${'b'.repeat(40)}', 'WETH', 1, now(), 0, 1);
    insert into liquidations (chain_id, user_id, account, asset_id, collateral_seized_base, debt_covered_usdc,
      health_factor_wad, status, transaction_hash, nonce) values
      (31337, '${A}', '0x${'a'.repeat(40)}', 'WETH', 1, 1, 1, 'confirmed', '0xl1', 1),
      (31337, '${B}', '0x${'b'.repeat(40)}', 'WETH', 1, 1, 1, 'confirmed', '0xl2', 2);
    insert into audit_log (actor, action, entity_type, entity_id, data) values
      ('ops:op-alice', 'card.ops_frozen', 'card', 'ic_a', '{"reason":"AML review 17"}'),
      ('supabase-bridge', 'user.created', 'user', '${B}', '{}');
    refresh materialized view user_position_summary;
  `);
}

beforeAll(async () => {
  services = await setUpServices();
  admin = services.database.sql;
  await seed(admin);
});

afterAll(async () => {
  for (const database of open) await database.close();
  await services?.close();
});

describe('the roles and the policies', () => {
  it('the services run without JIT (drizzle/0022); reconciliation keeps it', async () => {
    const jit = async (role: string) => ((await connect(role)`show jit`) as { jit: string }[])[0]?.jit;
    for (const role of [
      'credana_hot_path',
      'credana_ledger_writer',
      'credana_indexer',
      'credana_withdrawals',
    ])
      expect({ role, jit: await jit(role) }).toEqual({ role, jit: 'off' });
    expect(await jit('credana_reconciliation')).toBe('on');
  });

  it('no service role is a superuser, bypasses RLS or owns a relation', async () => {
    const roles = await admin<{ rolname: string; rolsuper: boolean; rolbypassrls: boolean; owns: number }[]>`
      select r.rolname, r.rolsuper, r.rolbypassrls,
        (select count(*)::int from pg_class c where c.relowner = r.oid) as owns
      from pg_roles r where r.rolname like 'credana\\_%' order by r.rolname`;
    expect(roles.map((r) => r.rolname)).toEqual(
      expect.arrayContaining([...ALL_ROWS_ROLES, 'credana_support_ro']),
    );
    for (const role of roles) {
      expect({
        role: role.rolname,
        super: role.rolsuper,
        bypass: role.rolbypassrls,
        owns: role.owns,
      }).toEqual({
        role: role.rolname,
        super: false,
        bypass: false,
        owns: 0,
      });
    }
  });

  it('RLS is on for every table holding users’ rows, with exactly the pinned policies', async () => {
    const tables = await admin<{ relname: string; relrowsecurity: boolean }[]>`
      select relname, relrowsecurity from pg_class
      where relnamespace = 'public'::regnamespace and relname = any(${[...RLS_TABLES]}::text[])`;
    expect(tables).toHaveLength(RLS_TABLES.length);
    for (const t of tables)
      expect({ t: t.relname, on: t.relrowsecurity }).toEqual({ t: t.relname, on: true });

    const policies = await admin<{ tablename: string; policyname: string; roles: string[]; qual: string }[]>`
      select tablename, policyname, roles::text[] as roles, qual from pg_policies where schemaname = 'public'
      order by tablename, policyname`;
    const byTable: Record<string, string[]> = {};
    for (const p of policies) {
      expect(p.roles).toHaveLength(1);
      const role = p.roles[0]!;
      expect(p.policyname).toBe(`${p.tablename}_${role}`);
      byTable[p.tablename] = [...(byTable[p.tablename] ?? []), role.replace(/^credana_/, '')];
      if (role === 'credana_support_ro') expect(p.qual).toMatch(/support_subject\(\)/);
      else expect(p.qual).toBe('true');
    }
    expect(byTable).toEqual(POLICIES);
  });

  it('leaves chain_events without RLS (the indexer COPYs into it), readable only by roles that see every row', async () => {
    const [table] = await admin<{ on: boolean }[]>`
      select relrowsecurity as on from pg_class where oid = 'public.chain_events'::regclass`;
    expect(table?.on).toBe(false);
    const holders = await admin<{ role: string }[]>`
      select rolname as role from pg_roles where rolname like 'credana\\_%'
        and (has_any_column_privilege(oid, 'public.chain_events'::regclass, 'SELECT, INSERT, UPDATE')
          or has_table_privilege(oid, 'public.chain_events'::regclass, 'DELETE'))
      order by rolname`;
    expect(holders.map((h) => h.role)).toEqual([
      'credana_indexer',
      'credana_reconciliation',
      'credana_supabase_sync',
    ]);
    // COPY, the indexer's way in, works as the indexer's role.
    const indexer = connect('credana_indexer');
    await indexer.begin(async (tx) => {
      const writable = await tx`copy chain_events (chain_id, block_hash, log_index, block_number,
        transaction_hash, address, event_name, args) from stdin`.writable();
      await new Promise<void>((resolve, reject) => {
        writable.once('error', reject);
        writable.once('finish', () => resolve());
        writable.end('31337\t0xcopy\t0\t9\t0xt9\t0xvault\tDeposited\t{}\n');
      });
      await tx`delete from chain_events where block_hash = '0xcopy'`;
    });
  });

  it('every role holding a privilege on an RLS table has a policy there (no grant that silently reads nothing)', async () => {
    const orphans = await admin<{ role: string; table: string }[]>`
      select r.rolname as role, t.relname as table
      from pg_roles r cross join pg_class t
      where r.rolname like 'credana\\_%' and t.relnamespace = 'public'::regnamespace and t.relrowsecurity
        and (has_any_column_privilege(r.oid, t.oid, 'SELECT, INSERT, UPDATE') or has_table_privilege(r.oid, t.oid, 'DELETE'))
        and not exists (select 1 from pg_policy p where p.polrelid = t.oid
          and (p.polroles @> array[r.oid] or exists (
            select 1 from unnest(p.polroles) pr where pr <> 0 and pg_has_role(r.oid, pr, 'MEMBER'))))`;
    expect(orphans).toEqual([]);
    // The check itself can fail: a grant without a policy is found.
    await admin.unsafe('grant select on wallets to credana_support_ro');
    try {
      const [found] = await admin<{ n: number }[]>`
        select count(*)::int as n from pg_class t where t.relname = 'wallets'
          and has_table_privilege('credana_support_ro', t.oid, 'SELECT')
          and not exists (select 1 from pg_policy p where p.polrelid = t.oid
            and p.polroles @> array['credana_support_ro'::regrole::oid])`;
      expect(found?.n).toBe(1);
      expect(await count(connect('credana_support_ro'), 'wallets')).toBe(0);
    } finally {
      await admin.unsafe('revoke select on wallets from credana_support_ro');
    }
  });
});

describe('services acting on any user see every row of what they were granted', () => {
  for (const role of ALL_ROWS_ROLES) {
    it(role, async () => {
      const sql = connect(role);
      const readable = await admin<{ table: string }[]>`
        select t as table from unnest(${[...RLS_TABLES]}::text[]) t
        where has_table_privilege(${role}, format('public.%I', t), 'SELECT')`;
      for (const { table } of readable) {
        const all = await count(admin, table);
        expect({ table, rows: all > 0 }).toEqual({ table, rows: true });
        expect({ table, rows: await count(sql, table) }).toEqual({ table, rows: all });
      }
    });
  }
});

describe('credana_support_ro: one user, on record', () => {
  let support: Sql;
  beforeAll(() => {
    support = connect('credana_support_ro');
  });

  it('sees no user before asking for one', async () => {
    expect(await count(admin, 'users')).toBe(2);
    expect(await count(support, 'users')).toBe(0);
    expect(await count(support, 'authorizations')).toBe(0);
    expect(await count(support, 'support_user_position_summary')).toBe(0);
  });

  it('refuses a request without a reason or for an unknown user', async () => {
    expect(await failure(support, `select support_open_user('${A}', 'x')`)).toBe('22023');
    expect(await failure(support, `select support_open_user('${A}', null)`)).toBe('22023');
    expect(
      await failure(support, `select support_open_user('00000000-0000-4000-8000-000000000fff', 'ticket 9')`),
    ).toBe('P0002');
  });

  it('after an audited request sees that user’s rows and not the other’s', async () => {
    await support`select support_open_user(${A}, 'ticket 4711: card declined at a clinic')`;
    const users = await support<{ id: string }[]>`select id from users`;
    expect(users.map((u) => u.id)).toEqual([A]);
    expect(await count(support, `authorizations where user_id = '${A}'`)).toBe(1);
    expect(await count(support, `authorizations where user_id = '${B}'`)).toBe(0);
    expect(await count(support, `cards where id = 'ic_a'`)).toBe(1);
    expect(await count(support, `cards where id = 'ic_b'`)).toBe(0);
    const summary = await support<{ user_id: string }[]>`select user_id from support_user_position_summary`;
    expect(summary.map((s) => s.user_id)).toEqual([A]);

    const [record] = await admin<{ actor: string; reason: string }[]>`
      select actor, reason from support_access where user_id = ${A} order by id desc limit 1`;
    expect(record).toEqual({ actor: 'credana_support_ro', reason: 'ticket 4711: card declined at a clinic' });
    const [audit] = await admin<{ actor: string; reason: string }[]>`
      select actor, data->>'reason' as reason from audit_log
      where action = 'support.user_opened' and entity_id = ${A} order by id desc limit 1`;
    expect(audit).toEqual({
      actor: 'support:credana_support_ro',
      reason: 'ticket 4711: card declined at a clinic',
    });
  });

  it('is refused the hidden columns of the user it may see, and the summary view', async () => {
    expect(await count(support, 'cards')).toBe(1);
    expect(
      await failure(support, 'select id, status, frozen, ops_frozen, ops_frozen_at from cards'),
    ).toBeNull();
    expect(await failure(support, 'select ops_frozen_reason from cards')).toBe('42501');
    expect(await failure(support, 'select ops_frozen_by from cards')).toBe('42501');
    expect(await failure(support, 'select * from cards')).toBe('42501');
    expect(
      await failure(support, 'select decision, decline_reason, merchant_category_code from authorizations'),
    ).toBeNull();
    expect(await failure(support, 'select merchant_name_sealed from authorizations')).toBe('42501');
    expect(await failure(support, 'select decision_source from authorizations')).toBe('42501');
    expect(await failure(support, 'select * from user_position_summary')).toBe('42501');
    for (const table of [
      'wallets',
      'ledger_entries',
      'card_events',
      'audit_log',
      'support_access',
      'credit_accounts',
    ]) {
      expect({ table, code: await failure(support, `select count(*) from ${table}`) }).toEqual({
        table,
        code: '42501',
      });
    }
  });

  it('cannot write, not even to the user it may see', async () => {
    expect(await failure(support, `update users set credit_limit_cents = 1 where id = '${A}'`)).toBe('42501');
    expect(await failure(support, `update cards set frozen = true where id = 'ic_a'`)).toBe('42501');
    expect(
      await failure(
        support,
        `insert into support_access (backend_pid, nonce, user_id, actor, reason, expires_at)
          values (pg_backend_pid(), gen_random_uuid(), '${B}', 'me', 'forged', now() + interval '1 day')`,
      ),
    ).toBe('42501');
    expect(
      await failure(
        support,
        `insert into audit_log (actor, action, entity_type, entity_id, data) values ('x', 'y', 'user', '${B}', '{}')`,
      ),
    ).toBe('42501');
  });

  it('cannot forge access: another session with the nonce, a made-up nonce, an expired request', async () => {
    expect(await count(support, 'users')).toBe(1);
    const [{ nonce } = { nonce: '' }] = await support<{ nonce: string }[]>`
      select current_setting('credana.support_nonce') as nonce`;
    expect(nonce).toMatch(/^[0-9a-f-]{36}$/);

    const other = connect('credana_support_ro');
    await other`select set_config('credana.support_nonce', ${nonce}, false)`;
    expect(await count(other, 'users')).toBe(0);
    await other`select set_config('credana.support_nonce', gen_random_uuid()::text, false)`;
    expect(await count(other, 'users')).toBe(0);
    await other`select set_config('credana.support_nonce', 'not a uuid', false)`;
    expect(await count(other, 'users')).toBe(0);

    await admin`update support_access set expires_at = now() - interval '1 second' where nonce = ${nonce}::uuid`;
    expect(await count(support, 'users')).toBe(0);
  });

  it('a new request replaces the old one, and closing ends it', async () => {
    await support`select support_open_user(${B}, 'ticket 4712')`;
    const users = await support<{ id: string }[]>`select id from users`;
    expect(users.map((u) => u.id)).toEqual([B]);
    await support`select support_close_user()`;
    expect(await count(support, 'users')).toBe(0);
  });
});

describe('credana_analytics: every row, pseudonymous columns', () => {
  let analytics: Sql;
  beforeAll(() => {
    analytics = connect('credana_analytics');
  });

  it('reads every user’s amounts', async () => {
    expect(await count(analytics, 'credit_accounts')).toBe(2);
    expect(await count(analytics, 'positions')).toBe(2);
    expect(await count(analytics, 'decisions')).toBe(2);
    expect(
      await failure(analytics, 'select id, user_id, held_cents, merchant_category_code from authorizations'),
    ).toBeNull();
    const facts = await analytics<{ id: string; merchant_category_code: string }[]>`
      select id, merchant_category_code from card_event_facts order by id`;
    expect(facts).toEqual([
      { id: 'evt_tx_a', merchant_category_code: '5812' },
      { id: 'evt_tx_b', merchant_category_code: '7995' },
    ]);
  });

  it('is refused wallets, merchant names, card details, payloads and audit rows', async () => {
    expect(await failure(analytics, 'select merchant_name_sealed from authorizations')).toBe('42501');
    expect(await failure(analytics, 'select card_id from decisions')).toBe('42501');
    expect(await failure(analytics, 'select blocked_mccs from users')).toBe('42501');
    // The view has no payload column at all.
    expect(await failure(analytics, 'select payload from card_event_facts')).toBe('42703');
    for (const table of [
      'wallets',
      'cards',
      'card_events',
      'chain_events',
      'audit_log',
      'settlements',
      'withdrawal_approvals',
      'liquidations',
      'user_position_summary',
    ]) {
      expect({ table, code: await failure(analytics, `select count(*) from ${table}`) }).toEqual({
        table,
        code: '42501',
      });
    }
  });

  it('cannot write', async () => {
    expect(
      await failure(analytics, `update credit_accounts set holds_cents = 0 where user_id = '${A}'`),
    ).toBe('42501');
    expect(
      await failure(
        analytics,
        `insert into decisions (id, event_id, authorization_id, card_id, approved, requested_cents, approved_cents,
          reason, source, latency_us, decided_at) values ('d', 'e', 'a', 'c', true, 1, 1, 'r', 's', 1, now())`,
      ),
    ).toBe('42501');
  });

  it('ingestion run by the reconciliation login reads as credana_analytics and gets both users’ spend', async () => {
    const storeUrl = await cloneTemplateDatabase();
    const store = createDatabase({ url: storeUrl, poolMax: 2, applicationName: 'row-security-test' });
    try {
      await setUpAnalytics(store.sql, 'native');
      const reconciliation = connect('credana_reconciliation');
      const seen = await readAsAnalytics(reconciliation, async (financial) => {
        const [who] = await financial<{ user: string }[]>`select current_user as user`;
        expect(await failure(financial, 'select count(*) from wallets')).toBe('42501');
        const counts = await refreshAnalytics({ financial, analytics: store.sql, backend: 'native' });
        return { user: who?.user, counts };
      });
      expect(seen.user).toBe('credana_analytics');
      expect(seen.counts.spend).toBe(2);
      expect(seen.counts.users).toBe(2);
      const spend = await store.sql<{ user_id: string; merchant_category_code: string }[]>`
        select user_id::text, merchant_category_code from analytics.card_spend order by user_id`;
      expect(spend).toEqual([
        { user_id: A, merchant_category_code: '5812' },
        { user_id: B, merchant_category_code: '7995' },
      ]);
      // The pooled connection is back to its own role afterwards.
      const [after] = await reconciliation<{ user: string }[]>`select current_user as user`;
      expect(after?.user).toBe('credana_reconciliation');
      expect(await count(reconciliation, 'wallets')).toBe(2);
    } finally {
      await store.close();
      await dropDatabase(storeUrl);
    }
  });
});

describe('the scheduled analytics job', () => {
  it('logged in as credana_reconciliation, ingests both users’ spend (reading as credana_analytics)', async () => {
    const storeUrl = await cloneTemplateDatabase();
    const reconcile = createReconcileServices(
      testConfig(
        {
          databaseUrl: roleUrl('credana_reconciliation'),
          redisUrl: services.redisUrl,
          prefix: services.prefix,
        },
        { ANALYTICS_DATABASE_URL: storeUrl },
      ),
    );
    const store = createDatabase({ url: storeUrl, poolMax: 1, applicationName: 'row-security-test' });
    try {
      const run = await runJob('analytics', reconcile);
      expect(run.status).toBe('ok');
      expect(await count(store.sql, 'analytics.card_spend')).toBe(2);
      // The scheduler's own connection is still itself after the job.
      const [who] = await reconcile.database.sql<{ user: string }[]>`select current_user as user`;
      expect(who?.user).toBe('credana_reconciliation');
    } finally {
      await store.close();
      await reconcile.close();
      await dropDatabase(storeUrl);
    }
  });
});

describe('credana_supabase_sync: every user, not the operators’ notes', () => {
  it('reads both users and the card switches, not the freeze reason, wallets or events', async () => {
    const sync = connect('credana_supabase_sync');
    expect(await count(sync, 'users')).toBe(2);
    expect(await failure(sync, 'select id, user_id, status, frozen, ops_frozen from cards')).toBeNull();
    expect(await count(sync, 'cards')).toBe(2);
    expect(await failure(sync, 'select ops_frozen_reason from cards')).toBe('42501');
    expect(await failure(sync, 'select ops_frozen_by from cards')).toBe('42501');
    expect(await failure(sync, 'select last4 from cards')).toBe('42501');
    for (const table of ['wallets', 'card_events', 'audit_log', 'settlements']) {
      expect({ table, code: await failure(sync, `select count(*) from ${table}`) }).toEqual({
        table,
        code: '42501',
      });
    }
    expect(await failure(sync, `update users set credit_limit_cents = 1 where id = '${A}'`)).toBe('42501');
    expect(await failure(sync, `update cards set ops_frozen = false where id = 'ic_a'`)).toBe('42501');
  });
});

describe('credana_reconciliation: every row and column, read-mostly', () => {
  it('reads payloads (without cardholder details) and wallets of both users; cannot delete or rewrite history', async () => {
    const reconciliation = connect('credana_reconciliation');
    expect(await count(reconciliation, 'wallets')).toBe(2);
    // The payload is readable (its merchant category), the cardholder's name in it was never stored
    // (drizzle/0014's redaction trigger).
    const [payload] = await reconciliation<{ mcc: string | null; name: string | null }[]>`
      select payload->'data'->'object'->'merchant_data'->>'category_code' as mcc,
        payload->'data'->'object'->'cardholder'->>'name' as name from card_events where id = 'evt_tx_b'`;
    expect(payload?.mcc).toBe('7995');
    expect(payload?.name).toBeNull();
    expect(await failure(reconciliation, `delete from authorizations where id = 'iauth_a'`)).toBe('42501');
    expect(await failure(reconciliation, `update positions set collateral_base = 0`)).toBe('42501');
    expect(await failure(reconciliation, 'select count(*) from support_access')).toBe('42501');
  });
});
