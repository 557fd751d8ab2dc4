// Proves the Stripe job matches a Stripe Issuing transactions export (the API's JSON list and the CSV download, fixtures in ./fixtures) against ledger movements booked by the real hot path and ledger writer, and that an export missing one capture and holding one extra produces exactly those two findings; also parses the authorizations export.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedUser } from '../test/support/fixtures.ts';
import { type HotPath, post, startHotPath } from '../test/support/hot-path.ts';
import { drainOutbox } from '../test/support/reconcile.ts';
import { transactionEvent } from '../test/support/stripe.ts';
import { runRecorded } from './runs.ts';
import { stripeJob } from './stripe.ts';
import {
  closedAuthorizationIds,
  parseAmountCents,
  readAuthorizationsExport,
  readTransactionsExport,
} from './stripe-export.ts';

const FIXTURES = path.join(import.meta.dirname, 'fixtures');
const DAY_S = 1_767_225_600; // 2026-01-01T00:00:00Z
let services: TestServices;
let hotPath: HotPath;

beforeAll(async () => {
  services = await setUpServices();
  hotPath = await startHotPath(services, { LOG_LEVEL: 'error' });
  const { cardId } = await seedUser(services.database.sql, { unsettledCents: 100_000n });
  // What the ledger booked: A, B and the refund as in the export, one capture Stripe's export lacks,
  // and one of the next day (outside the period). The export's ipi_1FixtureStripeOnly never reached us.
  const movements: [string, 'capture' | 'refund', number, number][] = [
    ['ipi_1FixtureCaptureA', 'capture', 1_250, DAY_S + 3_600],
    ['ipi_1FixtureCaptureB', 'capture', 800, DAY_S + 7_200],
    ['ipi_1FixtureRefundA', 'refund', 300, DAY_S + 10_800],
    ['ipi_1FixtureLedgerOnly', 'capture', 555, DAY_S + 20_000],
    ['ipi_1FixtureNextDay', 'capture', 4_200, DAY_S + 86_400],
  ];
  for (const [transactionId, type, amountCents, createdS] of movements) {
    const event = transactionEvent({
      cardId,
      type,
      amountCents,
      authorizationId: null,
      createdS,
      transactionId,
    });
    const res = await post(hotPath, '/stripe/events', event);
    if (res.status !== 200) console.log(res.status, JSON.stringify(res.json));
    expect(res.status).toBe(200);
  }
  await drainOutbox(services.redis, services.database.sql, services.prefix);
});

afterAll(async () => {
  await hotPath?.close();
  await services?.close();
});

describe('stripe job', () => {
  it.each(['issuing-transactions.json', 'issuing-transactions.csv'])(
    '%s: exactly the missing and the extra capture',
    async (file) => {
      const transactions = readTransactionsExport(path.join(FIXTURES, file));
      expect(transactions).toHaveLength(5);
      const result = await runRecorded(
        { sql: services.sqlFor('credana_reconciliation') },
        'stripe',
        stripeJob({ transactions, fromS: DAY_S, toS: DAY_S + 86_400 }),
      );
      expect(result.findings).toEqual([
        {
          kind: 'stripe_capture_missing_in_ledger',
          transactionId: 'ipi_1FixtureStripeOnly',
          amountCents: '999',
          authorizationId: null,
        },
        {
          kind: 'ledger_capture_missing_in_stripe',
          transactionId: 'ipi_1FixtureLedgerOnly',
          amountCents: '555',
        },
      ]);
      expect(result.status).toBe('findings');
    },
  );

  it('reports an amount that differs', async () => {
    const transactions = readTransactionsExport(path.join(FIXTURES, 'issuing-transactions.json')).map((t) =>
      t.id === 'ipi_1FixtureCaptureB' ? { ...t, amountCents: -801n } : t,
    );
    const result = await runRecorded(
      { sql: services.sqlFor('credana_reconciliation') },
      'stripe',
      stripeJob({ transactions, fromS: DAY_S, toS: DAY_S + 86_400 }),
    );
    expect(result.findings.filter((f) => f.kind === 'amount_mismatch')).toEqual([
      {
        kind: 'amount_mismatch',
        transactionId: 'ipi_1FixtureCaptureB',
        stripeCents: '801',
        ledgerCents: '800',
      },
    ]);
  });

  it('parses amounts exactly and the authorizations export', () => {
    expect([
      parseAmountCents('-12.50'),
      parseAmountCents('3.5'),
      parseAmountCents('-1234'),
      parseAmountCents('0.07'),
    ]).toEqual([-1250n, 350n, -1234n, 7n]);
    expect(() => parseAmountCents('12.345')).toThrow();
    const authorizations = readAuthorizationsExport(path.join(FIXTURES, 'issuing-authorizations.json'));
    expect([...closedAuthorizationIds(authorizations)]).toEqual(['iauth_1FixtureClosed']);
  });
});
