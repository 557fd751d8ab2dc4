// Proves card_events stores no cardholder PII on the real PostgreSQL (migration 0014's trigger): an authorization event written by the ledger writer loses its embedded cardholder's name, email, phone, billing address and personal details and the card's shipping details, keeping what reconciliation and analytics read (created, merchant category, ids, amounts); a cardholder event and its previous_attributes, written as the hot path's own role, lose them too; an event with nothing to strip is stored as it came.
import { randomUUID } from 'node:crypto';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedUser } from '../test/support/fixtures.ts';
import { authorizationRequest } from '../test/support/stripe-issuing-events.ts';
import { decisionFields } from './testing.ts';
import { applyBatch, parseEntry } from './write-batch.ts';

let services: TestServices;
const sql = () => services.database.sql;

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await services?.close();
});

/** Every piece of the cardholder that must not be stored, as it appears in the event's JSON text. */
const PII = ['Jenny', 'Rosen', 'jenny.rosen@example.com', '+18008675309', '510 Townsend', '94103', '1990'];

const cardholder = {
  id: 'ich_pii1',
  object: 'issuing.cardholder',
  name: 'Jenny Rosen',
  email: 'jenny.rosen@example.com',
  phone_number: '+18008675309',
  billing: {
    address: { line1: '510 Townsend St', city: 'San Francisco', postal_code: '94103', country: 'US' },
  },
  individual: { first_name: 'Jenny', last_name: 'Rosen', dob: { day: 1, month: 2, year: 1990 } },
  company: null,
  status: 'active',
  type: 'individual',
  created: 1_700_000_000,
};
const shipping = {
  name: 'Jenny Rosen',
  phone_number: '+18008675309',
  address: { line1: '510 Townsend St', city: 'San Francisco', postal_code: '94103', country: 'US' },
  status: 'delivered',
};

const stored = async (id: string) =>
  (
    await sql()<{ payload: postgres.JSONValue; text: string }[]>`
    select payload, payload::text as text from card_events where id = ${id}`
  )[0]!;

describe('card_events without cardholder PII', () => {
  it('strips the cardholder of an authorization event the ledger writer stores, keeping what the jobs read', async () => {
    const { userId, cardId } = await seedUser(sql());
    const event = authorizationRequest({ cardId, amountCents: 1_250 });
    const object = event.data.object as Record<string, unknown>;
    object['card'] = {
      id: cardId,
      object: 'issuing.card',
      last4: '4242',
      status: 'active',
      cardholder,
      shipping,
    };
    object['fleet'] = {
      cardholder_prompt_data: { driver_id: 'D-Jenny', user_id: 'Rosen-1' },
      purchase_type: 'fuel_purchase',
    };
    const parsed = parseEntry({
      stream: 's',
      id: `${Date.now()}-1`,
      fields: Object.fromEntries(
        ((flat) => flat.flatMap((v, i) => (i % 2 === 0 ? [[v, flat[i + 1]!]] : [])))(
          decisionFields({
            userId,
            cardId,
            grantedCents: 1_250n,
            eventId: event.id,
            authorizationId: object['id'] as string,
            event: JSON.stringify(event),
          }),
        ),
      ),
    });
    if (!parsed.ok) throw new Error(parsed.error);
    expect((await applyBatch(sql(), [parsed.entry])).applied).toBe(1);

    const row = await stored(event.id);
    expect(PII.filter((value) => row.text.includes(value))).toEqual([]);
    const payload = row.payload as { data: { object: Record<string, unknown> } };
    expect(payload.data.object['card']).toEqual({
      id: cardId,
      object: 'issuing.card',
      last4: '4242',
      status: 'active',
      cardholder: {
        id: 'ich_pii1',
        object: 'issuing.cardholder',
        status: 'active',
        type: 'individual',
        created: 1_700_000_000,
      },
    });
    expect(payload.data.object['fleet']).toEqual({ purchase_type: 'fuel_purchase' });
    expect(payload.data.object['merchant_data']).toEqual(object['merchant_data']);
    expect(payload.data.object['pending_request']).toEqual(object['pending_request']);
    // The expressions the Stripe reconciliation and the analytics ingest read (reconciler/stripe.ts,
    // reconciler/analytics/ingest.ts).
    const [read] = await sql()`select (ce.payload->'data'->'object'->>'created')::bigint as created,
        ce.payload->'data'->'object'->'merchant_data'->>'category_code' as mcc
      from card_events ce where ce.id = ${event.id}`;
    expect(read).toEqual({ created: String(event.data.object.created), mcc: '5411' });
  });

  it('strips a cardholder event and its previous attributes, whoever inserts it (here the hot path role)', async () => {
    const id = `evt_${randomUUID()}`;
    const event = {
      id,
      object: 'event',
      type: 'issuing_cardholder.updated',
      created: 1_700_000_100,
      data: {
        object: cardholder,
        previous_attributes: { email: 'jenny.old@example.com', billing: { address: { line1: '1 Old Rd' } } },
      },
    };
    await sql().begin(async (tx) => {
      await tx`set local role credana_hot_path`;
      await tx`insert into card_events (id, type, object_id, payload, created_at)
        values (${id}, ${event.type}, 'ich_pii1', ${JSON.stringify(event)}::text::jsonb, now())`;
    });
    const row = await stored(id);
    expect([...PII, 'jenny.old', 'Old Rd'].filter((value) => row.text.includes(value))).toEqual([]);
    expect(row.payload).toEqual({
      ...event,
      data: {
        object: {
          id: 'ich_pii1',
          object: 'issuing.cardholder',
          status: 'active',
          type: 'individual',
          created: 1_700_000_000,
        },
        previous_attributes: {},
      },
    });
  });

  it('strips a card event (its cardholder and shipping) and stores an event with nothing to strip as it came', async () => {
    const cardEvent = {
      id: `evt_${randomUUID()}`,
      object: 'event',
      type: 'issuing_card.created',
      created: 1_700_000_200,
      data: { object: { id: 'ic_pii1', object: 'issuing.card', last4: '4242', cardholder, shipping } },
    };
    const plain = {
      id: `evt_${randomUUID()}`,
      object: 'event',
      type: 'issuing_transaction.created',
      created: 1_700_000_300,
      data: {
        object: {
          id: 'ipi_1',
          object: 'issuing.transaction',
          amount: -100,
          card: 'ic_pii1',
          cardholder: 'ich_pii1',
          merchant_data: { name: 'SHOP', category_code: '5411' },
        },
      },
    };
    for (const e of [cardEvent, plain]) {
      await sql()`insert into card_events (id, type, payload, created_at)
        values (${e.id}, ${e.type}, ${JSON.stringify(e)}::text::jsonb, now())`;
    }
    const card = await stored(cardEvent.id);
    expect(PII.filter((value) => card.text.includes(value))).toEqual([]);
    expect((card.payload as { data: { object: unknown } }).data.object).toEqual({
      id: 'ic_pii1',
      object: 'issuing.card',
      last4: '4242',
      cardholder: {
        id: 'ich_pii1',
        object: 'issuing.cardholder',
        status: 'active',
        type: 'individual',
        created: 1_700_000_000,
      },
    });
    expect((await stored(plain.id)).payload).toEqual(plain);
  });
});
