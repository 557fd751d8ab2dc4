// Proves the support views and the audited freeze on a migrated Postgres, each statement run as PostgREST would (set local role + request.jwt.claims): support sees every user in exact dollars with names and statuses, a cardholder sees no rows, anon and the service role are refused, nobody writes through the views; support_freeze_card needs support and a reason, freezes through the user's card_controls (outbox row for the bridge) and records who and why in an append-only log; every column support sees has a comment.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  anonCaller,
  asCaller,
  createSupabaseTestDatabase,
  type SupabaseTestDatabase,
  serviceCaller,
  signUp,
  supportCaller,
  userCaller,
} from './harness.ts';

let db: SupabaseTestDatabase;
let alice: string;
let bob: string;
let staff: string;

const VIEWS = ['support_accounts', 'support_activity', 'support_actions'] as const;

/** The SQLSTATE of what `fn` threw, or 'ok'. */
async function outcome(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (error) {
    return String((error as { code?: unknown }).code);
  }
}

beforeAll(async () => {
  db = await createSupabaseTestDatabase();
  alice = await signUp(db.sql, { email: 'alice@example.test', userMetadata: { display_name: 'Alice A' } });
  bob = await signUp(db.sql, { email: 'Bob@Example.test', userMetadata: { display_name: 'Bob B' } });
  staff = await signUp(db.sql, {
    email: 'agent@credana.test',
    appMetadata: { provider: 'email', role: 'support' },
  });
  // Bob's projection as the sync writes it: odd cents, a value beyond 2^53 cents, a negative one.
  await db.sql`insert into public.account_summaries (user_id, account_status, card_status, collateral_value_cents,
      borrow_power_cents, credit_limit_cents, debt_onchain_cents, unsettled_cents, holds_cents, available_cents,
      health_factor, health_notice, as_of)
    values (${bob}, 'active', 'active', 9007199254740993, 100001, 250000, 101, 5, 1250, -7,
      1.234567890123456789, 'warning', now())`;
  await db.sql`insert into public.account_activity (id, user_id, kind, status, outcome, amount_cents,
      merchant_name, merchant_category_code, authorization_id, decline_code, decline_message, occurred_at)
    values ('authorization:iauth_s1', ${bob}, 'authorization', 'closed', 'declined', 500001, 'SHOP', '5411',
      'iauth_s1', 'insufficient_credit', 'Not enough credit', now())`;
  await db.sql`delete from credana_sync.outbox`;
});

afterAll(async () => {
  await db?.close();
});

describe('support views', () => {
  it('show support every user with names, statuses and exact dollars', async () => {
    const rows = await asCaller(
      db.sql,
      supportCaller(staff),
      (tx) => tx`select user_id, email, display_name, account_status, card_status, user_frozen,
        collateral_value_dollars::text, borrow_power_dollars::text, credit_limit_dollars::text,
        debt_onchain_dollars::text, unsettled_dollars::text, holds_dollars::text, available_dollars::text,
        health_factor::text, health_notice from public.support_accounts`,
    );
    expect(rows.map((r) => r['email']).sort()).toEqual([
      'Bob@Example.test',
      'agent@credana.test',
      'alice@example.test',
    ]);
    expect(rows.find((r) => r['user_id'] === bob)).toEqual({
      user_id: bob,
      email: 'Bob@Example.test',
      display_name: 'Bob B',
      account_status: 'active',
      card_status: 'active',
      user_frozen: false,
      collateral_value_dollars: '90071992547409.93',
      borrow_power_dollars: '1000.01',
      credit_limit_dollars: '2500.00',
      debt_onchain_dollars: '1.01',
      unsettled_dollars: '0.05',
      holds_dollars: '12.50',
      available_dollars: '-0.07',
      health_factor: '1.234567890123456789',
      health_notice: 'warning',
    });
    // Alice has no projection yet: her profile is there, the numbers are empty.
    expect(rows.find((r) => r['user_id'] === alice)).toMatchObject({
      display_name: 'Alice A',
      available_dollars: null,
    });

    const activity = await asCaller(
      db.sql,
      supportCaller(staff),
      (
        tx,
      ) => tx`select email, display_name, kind, outcome, amount_dollars::text, decline_code, decline_message
        from public.support_activity`,
    );
    expect(activity).toEqual([
      {
        email: 'Bob@Example.test',
        display_name: 'Bob B',
        kind: 'authorization',
        outcome: 'declined',
        amount_dollars: '5000.01',
        decline_code: 'insufficient_credit',
        decline_message: 'Not enough credit',
      },
    ]);
  });

  it('show a cardholder nothing (not even their own row), and refuse anon and the service role', async () => {
    for (const view of VIEWS) {
      const rows = await asCaller(db.sql, userCaller(bob), (tx) => tx.unsafe(`select * from public.${view}`));
      expect({ view, rows: rows.length }).toEqual({ view, rows: 0 });
      for (const caller of [anonCaller, serviceCaller]) {
        const code = await outcome(() =>
          asCaller(db.sql, caller, (tx) => tx.unsafe(`select * from public.${view}`)),
        );
        expect({ view, role: caller.role, code }).toEqual({ view, role: caller.role, code: '42501' });
      }
    }
  });

  it('let nobody but the owner write through them', async () => {
    const writes = [
      `update public.support_accounts set email = 'x@y.z' where user_id = '${bob}'`,
      `delete from public.support_accounts where user_id = '${bob}'`,
      `update public.support_activity set status = 'x'`,
      `insert into public.support_actions (reason) values ('x')`,
    ];
    for (const statement of writes) {
      for (const caller of [supportCaller(staff), userCaller(bob)]) {
        // 42501: no privilege; 55000: a joined view cannot be written through at all.
        const code = await outcome(() =>
          asCaller(db.sql, caller, (tx) => tx.unsafe(statement), { commit: true }),
        );
        expect({ statement, role: caller.role, refused: ['42501', '55000'].includes(code) }).toEqual({
          statement,
          role: caller.role,
          refused: true,
        });
      }
    }
    const [profile] = await db.sql`select email from public.profiles where id = ${bob}`;
    expect(profile?.['email']).toBe('Bob@Example.test');
    // Support cannot write the tables under the views either.
    expect(
      await outcome(() =>
        asCaller(db.sql, supportCaller(staff), (tx) =>
          tx.unsafe(
            `insert into private.support_actions (actor_id, action, user_id, reason, changed) values ('${staff}', 'card_frozen', '${bob}', 'forged', true)`,
          ),
        ),
      ),
    ).toBe('42501');
  });

  it('comment every column support sees', async () => {
    const rows = await db.sql<{ view: string; column: string; comment: string | null }[]>`
      select c.relname as view, a.attname as column, col_description(c.oid, a.attnum) as comment
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
      where n.nspname = 'public' and c.relname = any(${db.sql.array([...VIEWS])})`;
    expect(new Set(rows.map((r) => r.view))).toEqual(new Set(VIEWS));
    expect(rows.filter((r) => r.comment === null || r.comment.trim().length < 5)).toEqual([]);
  });
});

describe('support_freeze_card', () => {
  it('refuses anyone but support, and support without a reason, changing nothing', async () => {
    const freeze = (caller: Parameters<typeof asCaller>[1], reason: string | null) =>
      outcome(() =>
        asCaller(db.sql, caller, (tx) => tx`select public.support_freeze_card(${alice}, ${reason})`, {
          commit: true,
        }),
      );
    expect(await freeze(anonCaller, 'lost card')).toBe('42501');
    expect(await freeze(userCaller(bob), 'lost card')).toBe('42501');
    // A cardholder who writes themselves a support role into user_metadata is still not support.
    expect(
      await outcome(() =>
        asCaller(
          db.sql,
          {
            role: 'authenticated',
            claims: { sub: bob, role: 'authenticated', user_metadata: { role: 'support' } },
          },
          (tx) => tx`select public.support_freeze_card(${alice}, ${'lost card'})`,
          { commit: true },
        ),
      ),
    ).toBe('42501');
    expect(await freeze(supportCaller(staff), null)).toBe('22023');
    expect(await freeze(supportCaller(staff), '  no ')).toBe('22023');
    expect(await freeze(supportCaller(staff), 'x'.repeat(501))).toBe('22023');
    expect(
      await outcome(() =>
        asCaller(
          db.sql,
          supportCaller(staff),
          (tx) =>
            tx`select public.support_freeze_card(${'00000000-0000-4000-8000-000000000000'}, ${'lost card'})`,
        ),
      ),
    ).toBe('P0002');
    const [controls] = await db.sql`select frozen from public.card_controls where user_id = ${alice}`;
    expect(controls?.['frozen']).toBe(false);
    expect(await db.sql`select 1 from private.support_actions`).toHaveLength(0);
    expect(await db.sql`select 1 from credana_sync.outbox`).toHaveLength(0);
  });

  it("freezes the cardholder's cards for the bridge and records who and why, append-only", async () => {
    const [first] = await asCaller(
      db.sql,
      supportCaller(staff),
      (tx) =>
        tx`select public.support_freeze_card(${alice}, ${'  card stolen, reported by phone  '}) as result`,
      { commit: true },
    );
    expect(first?.['result']).toBe('frozen');
    const [controls] =
      await db.sql`select frozen, version::int from public.card_controls where user_id = ${alice}`;
    expect(controls).toEqual({ frozen: true, version: 2 });
    expect(await db.sql`select kind, user_id from credana_sync.outbox`).toEqual([
      { kind: 'controls_changed', user_id: alice },
    ]);
    const [again] = await asCaller(
      db.sql,
      supportCaller(staff),
      (tx) => tx`select public.support_freeze_card(${alice}, ${'called again'}) as result`,
      { commit: true },
    );
    expect(again?.['result']).toBe('already_frozen');

    const log = await asCaller(
      db.sql,
      supportCaller(staff),
      (tx) =>
        tx`select actor_id, actor_email, action, user_id, user_email, reason, changed from public.support_actions order by id`,
    );
    expect(log).toEqual([
      {
        actor_id: staff,
        actor_email: 'agent@credana.test',
        action: 'card_frozen',
        user_id: alice,
        user_email: 'alice@example.test',
        reason: 'card stolen, reported by phone',
        changed: true,
      },
      {
        actor_id: staff,
        actor_email: 'agent@credana.test',
        action: 'card_frozen',
        user_id: alice,
        user_email: 'alice@example.test',
        reason: 'called again',
        changed: false,
      },
    ]);
    const [status] = await asCaller(
      db.sql,
      supportCaller(staff),
      (tx) => tx`select user_frozen from public.support_accounts where user_id = ${alice}`,
    );
    expect(status?.['user_frozen']).toBe(true);

    // The log is append-only even for the owner (Studio's postgres role).
    expect(await outcome(() => db.sql`update private.support_actions set reason = 'edited'`)).toBe('42501');
    expect(await outcome(() => db.sql`delete from private.support_actions`)).toBe('42501');
    expect(await outcome(() => db.sql`truncate private.support_actions`)).toBe('42501');
    expect(await db.sql`select 1 from private.support_actions`).toHaveLength(2);
  });
});
