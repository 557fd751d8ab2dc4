// Proves the RLS matrix (anon, own rows, another's rows, support, service role × every public table × select/insert/update/delete) by running each statement as PostgREST would (set local role + request.jwt.claims) on a migrated Postgres.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PUBLIC_TABLES, PUBLIC_VIEWS } from '../types/database.ts';
import {
  anonCaller,
  asCaller,
  type Caller,
  createSupabaseTestDatabase,
  type SupabaseTestDatabase,
  serviceCaller,
  signUp,
  supportCaller,
  type TxSql,
  userCaller,
} from './harness.ts';

type Table = keyof typeof PUBLIC_TABLES;
type Op = 'select' | 'insert' | 'update' | 'delete';
/** ok: the row is read or written; none: RLS hides it (0 rows, no error); denied: SQLSTATE 42501. */
type Outcome = 'ok' | 'none' | 'denied';

let db: SupabaseTestDatabase;
let alice: string;
let bob: string;
let staff: string;

/** How each table is keyed by user, and a harmless change to write. */
const tables: Record<Table, { key: string; update: string; insert: (userId: string) => string }> = {
  profiles: {
    key: 'id',
    update: `display_name = 'Changed'`,
    insert: (u) => `insert into public.profiles (id, display_name) values ('${u}', 'New')`,
  },
  card_controls: {
    key: 'user_id',
    update: 'frozen = not frozen',
    insert: (u) => `insert into public.card_controls (user_id, frozen) values ('${u}', true)`,
  },
  account_summaries: {
    key: 'user_id',
    update: 'available_cents = available_cents + 1',
    insert: (u) => `insert into public.account_summaries (user_id, account_status, card_status,
      collateral_value_cents, borrow_power_cents, credit_limit_cents, debt_onchain_cents, unsettled_cents,
      holds_cents, available_cents, as_of) values ('${u}', 'active', 'active', 1, 1, 1, 0, 0, 0, 1, now())`,
  },
  account_activity: {
    key: 'user_id',
    update: `status = 'closed'`,
    insert: (
      u,
    ) => `insert into public.account_activity (id, user_id, kind, status, outcome, amount_cents, occurred_at)
      values ('authorization:iauth_new_${u.slice(0, 8)}', '${u}', 'authorization', 'pending', 'approved', 100, now())`,
  },
};

type Who = 'anon' | 'own' | 'other' | 'support' | 'service';

/** The expected matrix. Users read their own rows, edit only their profile and controls, never the projection. */
const expected: Record<Table, Record<Who, Record<Op, Outcome>>> = {
  profiles: {
    anon: { select: 'denied', insert: 'denied', update: 'denied', delete: 'denied' },
    own: { select: 'ok', insert: 'denied', update: 'ok', delete: 'denied' },
    other: { select: 'none', insert: 'denied', update: 'none', delete: 'denied' },
    support: { select: 'ok', insert: 'denied', update: 'none', delete: 'denied' },
    service: { select: 'ok', insert: 'ok', update: 'ok', delete: 'ok' },
  },
  card_controls: {
    anon: { select: 'denied', insert: 'denied', update: 'denied', delete: 'denied' },
    own: { select: 'ok', insert: 'denied', update: 'ok', delete: 'denied' },
    other: { select: 'none', insert: 'denied', update: 'none', delete: 'denied' },
    support: { select: 'ok', insert: 'denied', update: 'none', delete: 'denied' },
    service: { select: 'ok', insert: 'ok', update: 'ok', delete: 'ok' },
  },
  account_summaries: {
    anon: { select: 'denied', insert: 'denied', update: 'denied', delete: 'denied' },
    own: { select: 'ok', insert: 'denied', update: 'denied', delete: 'denied' },
    other: { select: 'none', insert: 'denied', update: 'denied', delete: 'denied' },
    support: { select: 'ok', insert: 'denied', update: 'denied', delete: 'denied' },
    service: { select: 'ok', insert: 'ok', update: 'ok', delete: 'ok' },
  },
  account_activity: {
    anon: { select: 'denied', insert: 'denied', update: 'denied', delete: 'denied' },
    own: { select: 'ok', insert: 'denied', update: 'denied', delete: 'denied' },
    other: { select: 'none', insert: 'denied', update: 'denied', delete: 'denied' },
    support: { select: 'ok', insert: 'denied', update: 'denied', delete: 'denied' },
    service: { select: 'ok', insert: 'ok', update: 'ok', delete: 'ok' },
  },
};

function callerFor(who: Who): { caller: Caller; target: () => string } {
  switch (who) {
    case 'anon':
      return { caller: anonCaller, target: () => bob };
    case 'own':
      return { caller: userCaller(alice), target: () => alice };
    case 'other':
      return { caller: userCaller(alice), target: () => bob };
    case 'support':
      return { caller: supportCaller(staff), target: () => bob };
    case 'service':
      return { caller: serviceCaller, target: () => bob };
  }
}

async function run(table: Table, who: Who, op: Op): Promise<Outcome> {
  const { caller, target } = callerFor(who);
  const userId = target();
  const spec = tables[table];
  const statement = {
    select: `select 1 from public.${table} where ${spec.key} = '${userId}'`,
    insert: spec.insert(userId),
    update: `update public.${table} set ${spec.update} where ${spec.key} = '${userId}'`,
    delete: `delete from public.${table} where ${spec.key} = '${userId}'`,
  }[op];
  try {
    const count = await asCaller(
      db.sql,
      caller,
      async (tx) => {
        const result = await tx.unsafe(statement);
        return op === 'select' ? result.length : result.count;
      },
      {
        // An insert needs the target's row absent: the owner removes it first, in the same (rolled back) transaction.
        ...(op === 'insert'
          ? {
              before: async (tx: TxSql) =>
                void (await tx.unsafe(`delete from public.${table} where ${spec.key} = '${userId}'`)),
            }
          : {}),
      },
    );
    return count > 0 ? 'ok' : 'none';
  } catch (error) {
    if ((error as { code?: string }).code === '42501') return 'denied';
    throw error;
  }
}

async function seedProjection(userId: string): Promise<void> {
  await db.sql`insert into public.account_summaries (user_id, account_status, card_status, collateral_value_cents,
      borrow_power_cents, credit_limit_cents, debt_onchain_cents, unsettled_cents, holds_cents, available_cents, as_of)
    values (${userId}, 'active', 'active', 100000, 80000, 50000, 0, 0, 0, 50000, now())`;
  await db.sql`insert into public.account_activity (id, user_id, kind, status, outcome, amount_cents, occurred_at)
    values (${`authorization:iauth_${userId.slice(0, 8)}`}, ${userId}, 'authorization', 'pending', 'approved', 1200, now())`;
}

beforeAll(async () => {
  db = await createSupabaseTestDatabase();
  alice = await signUp(db.sql, { email: 'alice@example.test' });
  bob = await signUp(db.sql, { email: 'bob@example.test' });
  staff = await signUp(db.sql, { email: 'staff@example.test', appMetadata: { role: 'support' } });
  for (const u of [alice, bob, staff]) await seedProjection(u);
});

afterAll(async () => {
  await db?.close();
});

describe('RLS matrix', () => {
  const cases: [Table, Who, Op, Outcome][] = [];
  for (const table of Object.keys(expected) as Table[]) {
    for (const who of Object.keys(expected[table]) as Who[]) {
      for (const op of ['select', 'insert', 'update', 'delete'] as const) {
        cases.push([table, who, op, expected[table][who][op]]);
      }
    }
  }

  it('covers every public table of the migrations', async () => {
    const rows = await db.sql<{ relname: string }[]>`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm') order by 1`;
    // The support views are proven in support.test.ts.
    expect(rows.map((r) => r.relname)).toEqual(
      [...Object.keys(expected), ...Object.keys(PUBLIC_VIEWS)].sort(),
    );
  });

  it.each(cases)('%s: %s %s → %s', async (table, who, op, outcome) => {
    expect(await run(table, who, op)).toBe(outcome);
  });
});

describe('RLS details', () => {
  it('has RLS enabled on every table of the exposed and private schemas', async () => {
    const rows = await db.sql<{ name: string }[]>`
      select n.nspname || '.' || c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname in ('public', 'credana_sync') and c.relkind in ('r', 'p') and not c.relrowsecurity`;
    expect(rows).toEqual([]);
  });

  it('refuses a user editing the unsafe columns of their own rows', async () => {
    const statements = [
      `update public.profiles set kyc_status = 'verified' where id = '${alice}'`,
      `update public.profiles set email = 'x@example.test' where id = '${alice}'`,
      `update public.card_controls set version = 99 where user_id = '${alice}'`,
      `update public.profiles set updated_at = now() where id = '${alice}'`,
      `update public.card_controls set user_id = '${bob}' where user_id = '${alice}'`,
    ];
    for (const statement of statements) {
      await expect(asCaller(db.sql, userCaller(alice), (tx) => tx.unsafe(statement))).rejects.toMatchObject({
        code: '42501',
      });
    }
  });

  it('lets a user edit the safe fields of their own profile, and keeps updated_at honest', async () => {
    const row = await asCaller(
      db.sql,
      userCaller(alice),
      async (tx) => {
        const [r] = await tx.unsafe(`update public.profiles set display_name = 'Alice', locale = 'fr-FR'
          where id = '${alice}' returning display_name, locale, updated_at`);
        return r as unknown as { display_name: string; locale: string; updated_at: Date };
      },
      {
        before: async (tx) =>
          void (await tx`update public.profiles set updated_at = '2000-01-01' where id = ${alice}`),
      },
    );
    expect(row.display_name).toBe('Alice');
    expect(row.locale).toBe('fr-FR');
    expect(row.updated_at.getUTCFullYear()).toBeGreaterThan(2000);
  });

  it('refuses invalid card controls with the check constraints', async () => {
    for (const statement of [
      `update public.card_controls set blocked_mccs = '{79a5}' where user_id = '${alice}'`,
      `update public.card_controls set blocked_mccs = array['7995', null] where user_id = '${alice}'`,
      `update public.card_controls set daily_limit_cents = -1 where user_id = '${alice}'`,
    ]) {
      await expect(asCaller(db.sql, userCaller(alice), (tx) => tx.unsafe(statement))).rejects.toMatchObject({
        code: '23514',
      });
    }
    const ok = await asCaller(db.sql, userCaller(alice), (tx) =>
      tx.unsafe(`update public.card_controls set blocked_mccs = '{7995,5933}', daily_limit_cents = 25000
        where user_id = '${alice}'`),
    );
    expect(ok.count).toBe(1);
  });

  it('does not take user_metadata (which users can edit) as a support role', async () => {
    const pretender = userCaller(alice);
    pretender.claims['user_metadata'] = { role: 'support' };
    const rows = await asCaller(
      db.sql,
      pretender,
      (tx) => tx`select id from public.profiles where id = ${bob}`,
    );
    expect(rows).toHaveLength(0);
  });

  it('shows support every user of the projection and controls', async () => {
    const counts = await asCaller(db.sql, supportCaller(staff), async (tx) => {
      const [s] = await tx`select count(*)::int as n from public.account_summaries`;
      const [c] = await tx`select count(*)::int as n from public.card_controls`;
      return [s?.['n'], c?.['n']];
    });
    expect(counts).toEqual([3, 3]);
  });

  it('keeps the private schemas away from every API role', async () => {
    for (const caller of [anonCaller, userCaller(alice), supportCaller(staff), serviceCaller]) {
      await expect(
        asCaller(db.sql, caller, (tx) => tx`select count(*) from credana_sync.outbox`),
      ).rejects.toMatchObject({ code: '42501' });
    }
    await expect(asCaller(db.sql, anonCaller, (tx) => tx`select private.is_support()`)).rejects.toMatchObject(
      {
        code: '42501',
      },
    );
    const [row] = await asCaller(db.sql, supportCaller(staff), (tx) => tx`select private.is_support() as s`);
    expect(row?.['s']).toBe(true);
  });

  it('shows Studio (the owner role) every row, which is only identity, controls and the projection', async () => {
    const [row] = await db.sql`select count(*)::int as n from public.profiles`;
    expect(row?.['n']).toBe(3);
  });
});

describe('seed.sql', () => {
  it('runs after the migrations and signs up its users through the trigger', async () => {
    const { readFile } = await import('node:fs/promises');
    await db.sql.unsafe(await readFile(new URL('../seed.sql', import.meta.url), 'utf8'));
    const rows = await db.sql`select p.email, p.display_name, c.frozen from public.profiles p
      join public.card_controls c on c.user_id = p.id where p.email like '%@credana.test' order by p.email`;
    expect(rows).toEqual([
      { email: 'dev@credana.test', display_name: 'Dev Cardholder', frozen: false },
      { email: 'support@credana.test', display_name: 'Support Desk', frozen: false },
    ]);
  });
});
