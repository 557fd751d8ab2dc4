// Proves applyBatch's bookkeeping on a real Postgres: outcome fields override the record, replays and
// concurrent writers of the same entries change nothing, a user's records aggregate correctly in one
// batch, terminal statuses stick, Stripe stand-in approvals create their row, and bad entries are refused.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LifecycleRecord } from '../shared/outbox/records.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedUser } from '../test/support/fixtures.ts';
import { captureFields, decisionFields } from './testing.ts';
import { applyBatch, type ParsedEntry, parseEntry } from './write-batch.ts';

let services: TestServices;
let seq = 0;

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await services?.close();
});

function toObject(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  return fields;
}

function parsed(flat: string[]): ParsedEntry {
  seq++;
  const result = parseEntry({ stream: 's', id: `${Date.now()}-${seq}`, fields: toObject(flat) });
  if (!result.ok) throw new Error(result.error);
  return result.entry;
}

function authEventFields(o: {
  userId: string;
  cardId: string;
  authorizationId: string;
  status: 'pending' | 'closed' | 'reversed' | 'expired';
  amountCents: number;
  approved: boolean;
  hd: bigint;
}): string[] {
  const eventId = `evt_${randomUUID()}`;
  const record: LifecycleRecord = {
    kind: 'lifecycle',
    eventId,
    eventType: o.status === 'pending' ? 'issuing_authorization.created' : 'issuing_authorization.updated',
    eventCreatedS: Math.floor(Date.now() / 1000),
    userId: o.userId,
    cardId: o.cardId,
    authorizationId: o.authorizationId,
    transactionId: null,
    holdDeltaCents: '999', // overridden by hd
    unsettledDeltaCents: '0',
    capturedDeltaCents: '0',
    authorization: {
      status: o.status,
      approved: o.approved,
      amountCents: String(o.amountCents),
      merchantCategoryCode: '7011',
      merchantName: 'HOTEL',
      createdS: Math.floor(Date.now() / 1000),
    },
    transactionType: null,
    event: JSON.stringify({ id: eventId }),
  };
  return ['r', JSON.stringify(record), 'hd', o.hd.toString(), 'ud', '0', 'cd', '0'];
}

const account = async (userId: string) =>
  (
    await services.database.sql<{ holds_cents: string; unsettled_cents: string; version: string }[]>`
    select holds_cents, unsettled_cents, version from credit_accounts where user_id = ${userId}`
  )[0]!;

describe('parseEntry', () => {
  it('refuses entries that are not JSON, break the schema, or whose outcome fields are missing or inconsistent', () => {
    const good = toObject(decisionFields({ userId: randomUUID(), cardId: 'ic_1', grantedCents: 100n }));
    expect(parseEntry({ stream: 's', id: '1-0', fields: good }).ok).toBe(true);
    const cases: Record<string, string>[] = [
      { ...good, r: 'not json' },
      { ...good, r: JSON.stringify({ kind: 'decision' }) },
      { ...good, amt: '1.5' },
      { ...good, ok: 'yes' },
      { ...good, ok: '0' }, // declined but granted 100
      { ...good, amt: '101' }, // more than requested
      Object.fromEntries(Object.entries(good).filter(([k]) => k !== 'why')),
    ];
    for (const fields of cases) expect(parseEntry({ stream: 's', id: '1-0', fields }).ok).toBe(false);
  });

  it('takes the outcome from the stream fields, not from the record', () => {
    const entry = parsed(
      decisionFields({ userId: randomUUID(), cardId: 'ic_1', grantedCents: 70n, requestedCents: 100n }),
    );
    expect(entry.item.kind === 'decision' && entry.item.approvedCents).toBe(70n);
    expect(entry.item.kind === 'decision' && entry.item.approved).toBe(true);
  });
});

describe('applyBatch', () => {
  it('applies a batch once, however many writers apply it at the same time or later', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql);
    const entries = Array.from({ length: 40 }, (_, i) =>
      parsed(decisionFields({ userId, cardId, grantedCents: BigInt(i % 4 === 0 ? 0 : 100 + i) })),
    );
    const expected = entries.reduce(
      (sum, e) => sum + (e.item.kind === 'decision' ? e.item.approvedCents : 0n),
      0n,
    );
    const results = await Promise.all([1, 2, 3, 4].map(() => applyBatch(sql, entries)));
    expect(results.reduce((n, r) => n + r.applied, 0)).toBe(40);
    const again = await applyBatch(sql, [...entries, ...entries]);
    expect(again).toEqual({ applied: 0, duplicates: 80 });
    expect(BigInt((await account(userId)).holds_cents)).toBe(expected);
    const [counts] = await sql<{ decisions: number; transfers: number; events: number; audits: number }[]>`
      select (select count(*)::int from decisions where user_id = ${userId}) as decisions,
        (select count(*)::int from ledger_transfers where user_id = ${userId}) as transfers,
        (select count(*)::int from card_events where user_id = ${userId}) as events,
        (select count(*)::int from audit_log where data->>'userId' = ${userId}) as audits`;
    expect(counts).toEqual({ decisions: 40, transfers: 30, events: 40, audits: 30 });
  });

  it('aggregates one user’s hold, capture and release in one batch, and a release-only batch later', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql);
    const authorizationId = `iauth_${randomUUID()}`;
    const batch = [
      parsed(decisionFields({ userId, cardId, authorizationId, grantedCents: 5_000n })),
      parsed(decisionFields({ userId, cardId, authorizationId, grantedCents: 2_000n })), // incremental
      parsed(
        captureFields({ userId, cardId, authorizationId, amountCents: 6_000n, heldBeforeCents: 7_000n }),
      ),
    ];
    await applyBatch(sql, batch);
    expect(await account(userId)).toMatchObject({ holds_cents: '1000', unsettled_cents: '6000' });
    // Releases only: the aggregate is negative, which an INSERT … ON CONFLICT upsert would refuse.
    await applyBatch(sql, [
      parsed(
        authEventFields({
          userId,
          cardId,
          authorizationId,
          status: 'closed',
          amountCents: 7_000,
          approved: true,
          hd: -1_000n,
        }),
      ),
    ]);
    expect(await account(userId)).toMatchObject({ holds_cents: '0', unsettled_cents: '6000', version: '2' });
    const [auth] =
      await sql`select status, approved, requested_cents, approved_cents, held_cents, captured_cents, decision
      from authorizations where id = ${authorizationId}`;
    expect(auth).toEqual({
      status: 'closed',
      approved: true,
      requested_cents: '7000',
      approved_cents: '7000',
      held_cents: '0',
      captured_cents: '6000',
      decision: 'approved',
    });
  });

  it('creates the row of a Stripe stand-in approval, and never reopens a terminal authorization', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql);
    const authorizationId = `iauth_${randomUUID()}`;
    const base = { userId, cardId, authorizationId, amountCents: 1_500, approved: true };
    await applyBatch(sql, [parsed(authEventFields({ ...base, status: 'pending', hd: 1_500n }))]);
    const [created] =
      await sql`select decision, decision_source, status, requested_cents, approved_cents, held_cents, expires_at
      from authorizations where id = ${authorizationId}`;
    expect(created).toMatchObject({
      decision: 'stripe',
      decision_source: 'stripe',
      status: 'pending',
      requested_cents: '1500',
      approved_cents: '1500',
      held_cents: '1500',
    });
    // Lodging MCC 7011: the hold lasts 31 days, as in the hot path.
    expect((created!['expires_at'] as Date).getTime()).toBeGreaterThan(Date.now() + 30 * 86_400_000);
    await applyBatch(sql, [
      parsed(authEventFields({ ...base, status: 'reversed', hd: -1_500n })),
      parsed(authEventFields({ ...base, status: 'pending', hd: 0n })), // an older 'created' arriving late
    ]);
    await applyBatch(sql, [parsed(authEventFields({ ...base, status: 'pending', hd: 0n }))]);
    const [after] =
      await sql`select status, requested_cents, held_cents from authorizations where id = ${authorizationId}`;
    expect(after).toEqual({ status: 'reversed', requested_cents: '1500', held_cents: '0' });
  });

  it('stores decisions and events of an unknown card and moves no money', async () => {
    const { sql } = services.database;
    const eventId = `evt_${randomUUID()}`;
    const result = await applyBatch(sql, [
      parsed(
        decisionFields({
          userId: null,
          cardId: 'ic_unknown',
          grantedCents: 0n,
          requestedCents: 100n,
          eventId,
        }),
      ),
    ]);
    expect(result.applied).toBe(1);
    expect((await sql`select user_id, approved from decisions where event_id = ${eventId}`)[0]).toEqual({
      user_id: null,
      approved: false,
    });
    // The payload is stored as a JSON object (not a JSON string holding the text).
    expect(await sql`select jsonb_typeof(payload) as t from card_events where id = ${eventId}`).toEqual([
      { t: 'object' },
    ]);
  });

  it('fails the whole batch, leaving nothing behind, when one record breaks a constraint', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql);
    const good = parsed(decisionFields({ userId, cardId, grantedCents: 100n }));
    const orphan = parsed(decisionFields({ userId: randomUUID(), cardId, grantedCents: 100n })); // no such user
    await expect(applyBatch(sql, [good, orphan])).rejects.toMatchObject({ code: '23503' });
    expect((await sql`select count(*)::int as n from decisions where user_id = ${userId}`)[0]).toEqual({
      n: 0,
    });
  });

  it('refuses a record for another user’s authorization, stored or in the same batch, and moves neither account', async () => {
    const { sql } = services.database;
    const owner = await seedUser(sql);
    const other = await seedUser(sql);
    const authorizationId = `iauth_${randomUUID()}`;
    await applyBatch(sql, [
      parsed(decisionFields({ ...owner, authorizationId, grantedCents: 5_000n })),
      parsed(decisionFields({ ...other, grantedCents: 9_000n })), // enough held that a wrong release fits
    ]);
    const before = { owner: await account(owner.userId), other: await account(other.userId) };
    // A capture of the owner's authorization booked to the other user (a wrong card → user view).
    const misBooked = parsed(
      captureFields({ ...other, authorizationId, amountCents: 5_000n, heldBeforeCents: 5_000n }),
    );
    await expect(applyBatch(sql, [misBooked])).rejects.toMatchObject({ code: 'authorization_user_mismatch' });
    // Both users' records for the one authorization in a single batch: refused as a whole.
    const ownersRelease = parsed(
      authEventFields({
        ...owner,
        authorizationId,
        status: 'reversed',
        amountCents: 5_000,
        approved: true,
        hd: -5_000n,
      }),
    );
    await expect(applyBatch(sql, [ownersRelease, misBooked])).rejects.toMatchObject({
      code: 'authorization_user_mismatch',
    });
    expect({ owner: await account(owner.userId), other: await account(other.userId) }).toEqual(before);
    const [auth] =
      await sql`select user_id, held_cents, captured_cents from authorizations where id = ${authorizationId}`;
    expect(auth).toEqual({ user_id: owner.userId, held_cents: '5000', captured_cents: '0' });
    expect(
      await sql`select count(*)::int as n from ledger_transfers
        where user_id = ${other.userId} and authorization_id = ${authorizationId}`,
    ).toEqual([{ n: 0 }]);
  });

  it('chains a whole batch in one audit statement, and refuses a statement whose running hash was forged mid-way', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql);
    const batch = Array.from({ length: 300 }, (_, i) =>
      parsed(decisionFields({ userId, cardId, grantedCents: BigInt(1 + i) })),
    );
    await applyBatch(sql, batch);
    const rows = await sql<{ prev_hash: string; hash: string }[]>`
      select prev_hash, hash from audit_log where data->>'userId' = ${userId} order by id`;
    expect(rows).toHaveLength(300);
    for (let i = 1; i < rows.length; i++) expect(rows[i]?.prev_hash).toBe(rows[i - 1]?.hash);
    const [head] = await sql<{ last_hash: string }[]>`select last_hash from audit_log_head`;
    expect(head?.last_hash).toBe(rows.at(-1)?.hash);
    // A writer may set the transaction-local running hash itself, even between the rows of its INSERT.
    await expect(
      sql`insert into audit_log (actor, action, entity_type, entity_id, data)
        select 'forger', 'x', 'user', g::text || set_config('credana.audit_log_prev_hash', 'forged', true), '{}'
        from generate_series(1, 3) g`,
    ).rejects.toMatchObject({ code: '23000' });
    expect(await sql`select * from audit_log_verify()`).toEqual([]);
  });
});
