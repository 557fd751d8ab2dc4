// Proves the writes two services share (shared/db/queries/) work under every role that calls them, through PgBouncer, on real Postgres: transfers take their ref once (entry-less ones too) with entries checked by the balance trigger, a decision or event is inserted once, an authorization is created once (its unsealed name queued with it) and then only added to, and credit deltas are summed per user.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServiceRole, setUpServices, type TestServices } from '../../../test/support/db.ts';
import { seedUser } from '../../../test/support/fixtures.ts';
import { type AuthorizationWrite, writeAuthorizations } from './authorizations.ts';
import { insertCardEvents } from './card-events.ts';
import { addToCreditAccounts, ensureCreditAccounts } from './credit-accounts.ts';
import { type DecisionRow, insertDecisions } from './decisions.ts';
import { cardMovementEntries, insertTransfers, ledgerEntriesByRef } from './ledger.ts';

let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});

afterAll(async () => {
  await services?.close();
});

const BOOKING_ROLES: ServiceRole[] = [
  'credana_hot_path',
  'credana_ledger_writer',
  'credana_indexer',
  'credana_settlement',
  'credana_reconciliation',
];

describe('insertTransfers', () => {
  it.each(BOOKING_ROLES)(
    'as %s: books a batch once, and an entry-less transfer takes its ref',
    async (role) => {
      const { userId } = await seedUser(services.database.sql);
      const sql = services.sqlFor(role);
      const batch = [
        { ref: `t:${role}:ref-only`, kind: 'hold' as const, userId, entries: [] },
        {
          ref: `t:${role}:hold`,
          kind: 'hold' as const,
          userId,
          authorizationId: `iauth_${role}`,
          entries: cardMovementEntries(userId, { holdDeltaCents: 700n, unsettledDeltaCents: 0n }),
        },
      ];
      const first = await sql.begin((tx) => insertTransfers(tx, batch));
      expect([...first].sort()).toEqual([`t:${role}:hold`, `t:${role}:ref-only`]);
      // Again, with the ref-only transfer now carrying entries: nothing is booked under a taken ref.
      const again = await sql.begin((tx) =>
        insertTransfers(tx, [
          {
            ...batch[0]!,
            entries: cardMovementEntries(userId, { holdDeltaCents: 5n, unsettledDeltaCents: 0n }),
          },
          batch[1]!,
        ]),
      );
      expect(again.size).toBe(0);
      const rows = await services.database.sql<
        { ref: string; authorization_id: string | null; entries: number }[]
      >`
      select t.ref, t.authorization_id, (select count(*)::int from ledger_entries e where e.transfer_id = t.id) as entries
      from ledger_transfers t where t.ref like ${`t:${role}:%`} order by t.ref`;
      expect(rows).toEqual([
        { ref: `t:${role}:hold`, authorization_id: `iauth_${role}`, entries: 2 },
        { ref: `t:${role}:ref-only`, authorization_id: null, entries: 0 },
      ]);
      const booked = await ledgerEntriesByRef(services.database.sql, [`t:${role}:hold`]);
      expect(booked.get(`t:${role}:hold`)?.map((e) => e.amountCents)).toEqual([700n, -700n]);
    },
  );

  it('refuses an unbalanced transfer with the whole batch', async () => {
    const { userId } = await seedUser(services.database.sql);
    const sql = services.sqlFor('credana_ledger_writer');
    const error = await sql
      .begin((tx) =>
        insertTransfers(tx, [
          {
            ref: 'unbalanced:ok',
            kind: 'hold',
            userId,
            entries: cardMovementEntries(userId, { holdDeltaCents: 1n, unsettledDeltaCents: 0n }),
          },
          {
            ref: 'unbalanced:bad',
            kind: 'hold',
            userId,
            entries: [{ account: 'user_holds', userId, amountCents: 3n }],
          },
        ]),
      )
      .catch((e: unknown) => e as { code?: string });
    expect(error).toMatchObject({ code: '23514' });
    const [row] = await services.database.sql<{ n: number }[]>`
      select count(*)::int as n from ledger_transfers where ref like 'unbalanced:%'`;
    expect(row?.n).toBe(0);
  });
});

describe('decisions and card events', () => {
  it.each(['credana_hot_path', 'credana_ledger_writer'] as const)(
    'as %s: inserts each event once and says which were new',
    async (role) => {
      const { userId, cardId } = await seedUser(services.database.sql);
      const sql = services.sqlFor(role);
      const decision = (n: number): DecisionRow => ({
        id: `dec_${role}_${n}`,
        eventId: `evt_${role}_${n}`,
        authorizationId: `iauth_${role}_${n}`,
        userId,
        cardId,
        approved: n === 1,
        requestedCents: 900n,
        approvedCents: n === 1 ? 900n : 0n,
        reason: n === 1 ? 'approved' : 'velocity',
        source: role === 'credana_hot_path' ? 'postgres' : 'redis',
        latencyUs: 120,
        decidedAt: new Date(),
      });
      expect(await sql.begin((tx) => insertDecisions(tx, [decision(1)]))).toEqual(new Set([`evt_${role}_1`]));
      // A replay of event 1 under another decision id is not new; event 2 is.
      const replay = { ...decision(1), id: `dec_${role}_1b` };
      expect(await sql.begin((tx) => insertDecisions(tx, [replay, decision(2)]))).toEqual(
        new Set([`evt_${role}_2`]),
      );
      const stored = await services.database.sql<{ id: string; approved: boolean }[]>`
      select id, approved from decisions where event_id = ${`evt_${role}_1`}`;
      expect(stored).toEqual([{ id: `dec_${role}_1`, approved: true }]);

      // Stripe's `created`: the same on every delivery of an event (the key is id and created_at).
      const createdAt = new Date(Math.floor(Date.now() / 1000) * 1000);
      const event = (id: string, payload: string) => ({
        id,
        type: 'issuing_authorization.request',
        userId,
        objectId: `iauth_${role}_1`,
        payload,
        createdAt,
      });
      const body = `{"id":"evt_${role}_1","amount":900,"nested":{"list":[1,2]}}`;
      expect(await sql.begin((tx) => insertCardEvents(tx, [event(`evt_${role}_1`, body)]))).toEqual(
        new Set([`evt_${role}_1`]),
      );
      expect(
        await sql.begin((tx) =>
          insertCardEvents(tx, [event(`evt_${role}_1`, body), event(`evt_${role}_2`, '{"id":"two"}')]),
        ),
      ).toEqual(new Set([`evt_${role}_2`]));
      const payloads = await services.database.sql<{ id: string; amount: string | null; kind: string }[]>`
      select id, payload->>'amount' as amount, jsonb_typeof(payload) as kind from card_events
      where id like ${`evt_${role}_%`} order by id`;
      expect(payloads).toEqual([
        { id: `evt_${role}_1`, amount: '900', kind: 'object' },
        { id: `evt_${role}_2`, amount: null, kind: 'object' },
      ]);
    },
  );
});

describe('writeAuthorizations', () => {
  const write = (
    id: string,
    userId: string,
    cardId: string,
    cents: bigint,
    name: string | null,
  ): AuthorizationWrite => ({
    id,
    userId,
    cardId,
    create: {
      status: 'pending',
      approved: cents > 0n,
      decision: cents > 0n ? 'approved' : 'declined',
      declineReason: cents > 0n ? null : 'insufficient_funds',
      decisionId: `dec_${id}`,
      decisionSource: 'postgres',
      latencyUs: 90,
      merchantCategoryCode: '5411',
      merchantNameSealed: null,
      merchantName: name,
      expiresAt: new Date(Date.now() + 86_400_000),
      requestedCents: 1_000n,
      approvedCents: cents,
      heldCents: cents,
      capturedCents: 0n,
    },
    add: {
      requestedCents: 1_000n,
      approvedCents: cents,
      heldCents: cents,
      capturedCents: 0n,
      approvedByDecision: cents > 0n,
      approvedByStripe: null,
      status: null,
    },
  });

  it.each(['credana_hot_path', 'credana_ledger_writer'] as const)(
    'as %s: creates a row once with its name queued, then only adds to it',
    async (role) => {
      const { userId, cardId } = await seedUser(services.database.sql);
      const sql = services.sqlFor(role);
      const id = `iauth_w_${role}`;
      await sql.begin((tx) => writeAuthorizations(tx, [write(id, userId, cardId, 0n, 'CORNER SHOP')]));
      // An increment that approves, carrying another name: added to the row, the name queue left alone.
      await sql.begin((tx) => writeAuthorizations(tx, [write(id, userId, cardId, 400n, 'OTHER NAME')]));
      const [row] = await services.database.sql<
        {
          requested: string;
          approved_cents: string;
          held: string;
          approved: boolean;
          decision: string;
          status: string;
        }[]
      >`select requested_cents::text as requested, approved_cents::text, held_cents::text as held, approved, decision, status
      from authorizations where id = ${id}`;
      expect(row).toEqual({
        requested: '2000',
        approved_cents: '400',
        held: '400',
        approved: true,
        decision: 'declined',
        status: 'pending',
      });
      const queued = await services.database.sql<{ merchant_name: string }[]>`
      select merchant_name from merchant_names_unsealed where authorization_id = ${id}`;
      expect(queued).toEqual([{ merchant_name: 'CORNER SHOP' }]);
    },
  );
});

describe('credit accounts', () => {
  it.each(['credana_hot_path', 'credana_ledger_writer', 'credana_indexer'] as const)(
    'as %s: creates missing accounts and sums several deltas of one user into one version',
    async (role) => {
      const { userId: a } = await seedUser(services.database.sql);
      const { userId: b } = await seedUser(services.database.sql);
      await services.database.sql`delete from credit_accounts where user_id = ${b}`;
      const [before] = await services.database.sql<{ version: string }[]>`
      select version::text from credit_accounts where user_id = ${a}`;
      const sql = services.sqlFor(role);
      await sql.begin(async (tx) => {
        await ensureCreditAccounts(tx, [b, a, b]);
        await addToCreditAccounts(tx, [
          { userId: a, holdsCents: 300n },
          { userId: b, debtOnchainUsdc: 1_500_000n },
          { userId: a, holdsCents: -100n, unsettledCents: 50n },
        ]);
      });
      const rows = await services.database.sql<
        { user_id: string; holds: string; unsettled: string; debt: string; version: string }[]
      >`select user_id::text, holds_cents::text as holds, unsettled_cents::text as unsettled,
        debt_onchain_usdc::text as debt, version::text from credit_accounts where user_id in (${a}, ${b})`;
      const byUser = new Map(rows.map((r) => [r.user_id, r]));
      expect(byUser.get(a)).toMatchObject({ holds: '200', unsettled: '50', debt: '0' });
      expect(byUser.get(b)).toMatchObject({ holds: '0', unsettled: '0', debt: '1500000' });
      expect(BigInt(byUser.get(a)!.version) - BigInt(before!.version)).toBe(1n);
    },
  );

  it('as credana_settlement (UPDATE only): moves unsettled cents of an existing account', async () => {
    const { userId } = await seedUser(services.database.sql, { unsettledCents: 900n });
    const [start] = await services.database.sql<{ version: string }[]>`
      select version::text from credit_accounts where user_id = ${userId}`;
    await services
      .sqlFor('credana_settlement')
      .begin((tx) => addToCreditAccounts(tx, [{ userId, unsettledCents: -900n }]));
    const [row] = await services.database.sql<{ unsettled: string; version: string }[]>`
      select unsettled_cents::text as unsettled, version::text from credit_accounts where user_id = ${userId}`;
    expect(row).toEqual({ unsettled: '0', version: (BigInt(start!.version) + 1n).toString() });
  });
});
