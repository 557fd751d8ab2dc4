// Proves the nightly `stripe` run reads Stripe Issuing through the real `stripe` library from a local server speaking Stripe's list format (Stripe's published example objects, created[gte]/[lt], limit, starting_after, has_more) and, against ledger movements booked by the real hot path and ledger writer, finds exactly a missing and an extra capture (and the authorization findings); that its day cursor walks whole UTC days; and that bad answers (HTTP errors, a wrong key, bad JSON, a bad object, an object outside the period, has_more on an empty page, too many pages or items) fail the run with one clear line, leak no key, and lose nothing: the same day is read again once Stripe answers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import { type HotPath, post, startHotPath, testConfig, WETH_PRICE_E8 } from '../test/support/hot-path.ts';
import { drainOutbox } from '../test/support/reconcile.ts';
import { authorizationRequest, transactionEvent } from '../test/support/stripe.ts';
import {
  exampleAuthorization,
  exampleTransaction,
  type StripeApiServer,
  startStripeApiServer,
} from '../test/support/stripe-api-server.ts';
import { createReconcileServices, type ReconcileServices, runJob } from './index.ts';
import { runRecorded } from './runs.ts';
import { stripeApiJob } from './stripe.ts';
import { createStripeApiClient, fetchIssuingPeriod, StripeApiError } from './stripe-api.ts';

const API_KEY = 'sk_test_credana_local_stripe_server_only_01';
const DAY_S = Math.floor(Date.now() / 86_400_000) * 86_400 - 86_400; // yesterday, 00:00 UTC
const DAY = new Date(DAY_S * 1000).toISOString().slice(0, 10);
const NEXT_DAY = new Date((DAY_S + 86_400) * 1000).toISOString().slice(0, 10);
let services: TestServices;
let hotPath: HotPath;
let stripeServer: StripeApiServer;
let cardId = '';
let knownAuthorizationId = '';

const TWO_FINDINGS = [
  {
    kind: 'stripe_capture_missing_in_ledger',
    transactionId: 'ipi_1ApiStripeOnly',
    amountCents: '999',
    authorizationId: null,
  },
  { kind: 'ledger_capture_missing_in_stripe', transactionId: 'ipi_1ApiLedgerOnly', amountCents: '555' },
];

function reconcileServices(nowMs: number): ReconcileServices {
  return createReconcileServices(
    testConfig(
      services,
      { STRIPE_SECRET_KEY: API_KEY, STRIPE_API_URL: stripeServer.url },
      'credana_reconciliation',
    ),
    undefined,
    { now: () => nowMs },
  );
}

function stripeClient(apiKey = API_KEY) {
  return createStripeApiClient({
    apiKey,
    apiUrl: stripeServer.url,
    apiVersion: '2025-03-31.basil',
    maxNetworkRetries: 0,
  });
}

async function lastCursor(): Promise<string | null> {
  const [row] = await services.database.sql<{ cursor: string | null }[]>`
    select cursor from reconciliation_runs where job = 'stripe' order by id desc limit 1`;
  return row?.cursor ?? null;
}

beforeAll(async () => {
  services = await setUpServices();
  await seedAsset(
    services.database.sql,
    services.redis,
    services.prefix,
    WETH,
    WETH_PRICE_E8,
    Math.floor(Date.now() / 1000),
  );
  hotPath = await startHotPath(services, { LOG_LEVEL: 'error' });
  stripeServer = await startStripeApiServer(API_KEY);
  ({ cardId } = await seedUser(services.database.sql, {
    unsettledCents: 100_000n,
    collateral: [{ assetId: WETH.assetId, amountBase: wethForBorrowPower(1_000_000n, WETH_PRICE_E8) }],
  }));
  // What the ledger booked: A, B and a refund as Stripe has them, one capture Stripe lacks, one of the
  // next day. Stripe's ipi_1ApiStripeOnly never reached us.
  const movements: [string, 'capture' | 'refund', number, number][] = [
    ['ipi_1ApiCaptureA', 'capture', 1_250, DAY_S + 3_600],
    ['ipi_1ApiCaptureB', 'capture', 800, DAY_S + 7_200],
    ['ipi_1ApiRefundA', 'refund', 300, DAY_S + 10_800],
    ['ipi_1ApiLedgerOnly', 'capture', 555, DAY_S + 20_000],
    ['ipi_1ApiNextDay', 'capture', 4_200, DAY_S + 86_400 + 60],
  ];
  for (const [transactionId, type, amountCents, createdS] of movements) {
    const res = await post(
      hotPath,
      '/stripe/events',
      transactionEvent({ cardId, type, amountCents, authorizationId: null, createdS, transactionId }),
    );
    expect(res.status).toBe(200);
  }
  // One authorization approved by the hot path, created in the period.
  knownAuthorizationId = 'iauth_1ApiKnownApproved';
  const approval = await post(
    hotPath,
    '/stripe/authorizations',
    authorizationRequest({
      cardId,
      amountCents: 2_000,
      authorizationId: knownAuthorizationId,
      createdS: DAY_S + 40_000,
    }),
  );
  expect(approval.json.approved).toBe(true);
  await drainOutbox(services.redis, services.database.sql, services.prefix);

  stripeServer.objects.transactions = [
    exampleTransaction({
      id: 'ipi_1ApiCaptureA',
      type: 'capture',
      amount: -1_250,
      created: DAY_S + 3_600,
      authorization: null,
    }),
    exampleTransaction({
      id: 'ipi_1ApiCaptureB',
      type: 'capture',
      amount: -800,
      created: DAY_S + 7_200,
      authorization: null,
    }),
    exampleTransaction({
      id: 'ipi_1ApiRefundA',
      type: 'refund',
      amount: 300,
      created: DAY_S + 10_800,
      authorization: null,
    }),
    exampleTransaction({
      id: 'ipi_1ApiStripeOnly',
      type: 'capture',
      amount: -999,
      created: DAY_S + 30_000,
      authorization: null,
    }),
    exampleTransaction({
      id: 'ipi_1ApiNextDay',
      type: 'capture',
      amount: -4_200,
      created: DAY_S + 86_400 + 60,
      authorization: null,
    }),
    exampleTransaction({
      id: 'ipi_1ApiDayBefore',
      type: 'capture',
      amount: -10,
      created: DAY_S - 60,
      authorization: null,
    }),
  ];
  stripeServer.objects.authorizations = [
    exampleAuthorization({
      id: knownAuthorizationId,
      amount: 2_000,
      approved: true,
      status: 'pending',
      created: DAY_S + 40_000,
      card: cardId,
    }),
    // Declined by Stripe and unknown here: nothing to reconcile.
    exampleAuthorization({
      id: 'iauth_1ApiDeclinedElsewhere',
      amount: 5_000,
      approved: false,
      status: 'closed',
      created: DAY_S + 50_000,
    }),
  ];
});

afterAll(async () => {
  await stripeServer?.close();
  await hotPath?.close();
  await services?.close();
});

describe('stripe job from the API', () => {
  it('reads the period page by page and finds exactly the missing and the extra capture', async () => {
    stripeServer.requests.length = 0;
    const result = await runRecorded(
      { sql: services.sqlFor('credana_reconciliation') },
      'stripe',
      stripeApiJob({ stripe: stripeClient(), period: { fromS: DAY_S, toS: DAY_S + 86_400 }, pageSize: 2 }),
    );
    expect(result.findings).toEqual(TWO_FINDINGS);
    expect(result.status).toBe('findings');
    // 4 transactions in the period: pages of 2, 2 (has_more false); 2 authorizations: one page.
    expect(stripeServer.requests.map((r) => [r.list, r.query['starting_after'] ?? null])).toEqual([
      ['transactions', null],
      ['transactions', 'ipi_1ApiRefundA'],
      ['authorizations', null],
    ]);
    for (const { query } of stripeServer.requests) {
      expect(query).toMatchObject({
        'created[gte]': String(DAY_S),
        'created[lt]': String(DAY_S + 86_400),
        limit: '2',
      });
    }
  });

  it('reports an approved authorization we never saw, and a hold Stripe reversed that we still keep', async () => {
    const saved = stripeServer.objects.authorizations;
    stripeServer.objects.authorizations = [
      exampleAuthorization({
        id: knownAuthorizationId,
        amount: 2_000,
        approved: true,
        status: 'reversed',
        created: DAY_S + 40_000,
      }),
      exampleAuthorization({
        id: 'iauth_1ApiStandIn',
        amount: 700,
        approved: true,
        status: 'pending',
        created: DAY_S + 41_000,
      }),
    ];
    try {
      const result = await runRecorded(
        { sql: services.sqlFor('credana_reconciliation') },
        'stripe',
        stripeApiJob({ stripe: stripeClient(), period: { fromS: DAY_S, toS: DAY_S + 86_400 } }),
      );
      expect(result.findings.filter((f) => !f.kind.includes('capture'))).toEqual([
        {
          kind: 'hold_open_after_stripe_ended',
          authorizationId: knownAuthorizationId,
          stripeStatus: 'reversed',
          heldCents: '2000',
        },
        {
          kind: 'stripe_authorization_missing_in_ledger',
          authorizationId: 'iauth_1ApiStandIn',
          amountCents: '700',
        },
      ]);
    } finally {
      stripeServer.objects.authorizations = saved;
    }
  });

  it('runs as scheduled: yesterday first, then nothing until the next day; a bad answer fails the run and the same day is read again', async () => {
    // The scheduled run, the morning after DAY: no cursor yet, so it reconciles yesterday.
    const morning = (DAY_S + 86_400 + 4 * 3_600) * 1000;
    const first = reconcileServices(morning);
    try {
      // Stripe down for the authorizations list (every retry the library makes gets a 500 too).
      stripeServer.faults.push({
        list: 'authorizations',
        status: 500,
        times: 10,
        body: JSON.stringify({ error: { type: 'api_error', message: 'Something went wrong' } }),
      });
      const failed = await runJob('stripe', first);
      stripeServer.faults.length = 0;
      expect(failed.status).toBe('failed');
      expect(failed.findings).toEqual([
        {
          kind: 'run_failed',
          message: 'GET /v1/issuing/authorizations page 1: StripeAPIError (HTTP 500): Something went wrong',
        },
      ]);
      expect(await lastCursor()).toBe(null);

      const ok = await runJob('stripe', first);
      expect(ok.findings).toEqual(TWO_FINDINGS.map((f) => ({ ...f, day: DAY })));
      expect(ok.cursor).toBe(NEXT_DAY);
      expect(await lastCursor()).toBe(NEXT_DAY);

      // Later the same day: the next whole day has not ended, nothing is read.
      const before = stripeServer.requests.length;
      const again = await runJob('stripe', first);
      expect(again).toMatchObject({ status: 'ok', checked: 0, cursor: NEXT_DAY });
      expect(stripeServer.requests.length).toBe(before);
    } finally {
      await first.close();
    }
  });

  const DAY_PERIOD = { fromS: DAY_S, toS: DAY_S + 86_400 };
  const badAnswers: [string, Parameters<StripeApiServer['faults']['push']>[0], RegExp][] = [
    [
      'HTML instead of JSON',
      { list: 'transactions', status: 200, body: '<html>oops</html>' },
      /^GET \/v1\/issuing\/transactions page 1: StripeAPIError.*Invalid JSON/,
    ],
    [
      'not a list',
      { list: 'transactions', body: () => ({ object: 'issuing.transaction', id: 'ipi_x' }) },
      /^GET \/v1\/issuing\/transactions page 1: the answer is not a list object/,
    ],
    [
      'an amount that is not an integer',
      {
        list: 'transactions',
        body: (p) => ({ ...p, data: [{ ...(p.data[0] as object), amount: '12.50' }] }),
      },
      /^GET \/v1\/issuing\/transactions page 1 item 0: amount /,
    ],
    [
      'an object outside the period',
      {
        list: 'authorizations',
        body: (p) => ({ ...p, data: [{ ...(p.data[0] as object), created: DAY_S - 1 }] }),
      },
      /^GET \/v1\/issuing\/authorizations page 1: iauth_\w+ was created at \d+, outside the period/,
    ],
    [
      'has_more on an empty page',
      { list: 'transactions', page: 2, body: (p) => ({ ...p, data: [], has_more: true }) },
      /^GET \/v1\/issuing\/transactions page 2: has_more is true but the page is empty$/,
    ],
    [
      'more items than asked for',
      { list: 'transactions', body: (p) => ({ ...p, data: [...p.data, ...p.data, ...p.data] }) },
      /^GET \/v1\/issuing\/transactions page 1: 6 items, more than the 2 asked for$/,
    ],
  ];
  it.each(badAnswers)('refuses %s with one clear error', async (_name, fault, message) => {
    stripeServer.faults.length = 0;
    stripeServer.faults.push(fault);
    const error = await fetchIssuingPeriod(stripeClient(), { ...DAY_PERIOD, pageSize: 2 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StripeApiError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain('\n');
    stripeServer.faults.length = 0;
  });

  it('names a refused key without leaking it, and stops at the page and item limits', async () => {
    const wrongKey = 'sk_test_someone_else_key_but_not_ours_9';
    const refused = await fetchIssuingPeriod(stripeClient(wrongKey), DAY_PERIOD).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(refused?.message).toMatch(
      /^GET \/v1\/issuing\/transactions page 1: StripeAuthenticationError \(HTTP 401\): Invalid API Key provided: \[key\]/,
    );
    expect(refused?.message).not.toContain('someone_else');
    await expect(
      fetchIssuingPeriod(stripeClient(), { ...DAY_PERIOD, pageSize: 1, pagesMax: 3 }),
    ).rejects.toThrow(
      /^GET \/v1\/issuing\/transactions: more than 3 pages for one period \(limit\); nothing was used$/,
    );
    await expect(
      fetchIssuingPeriod(stripeClient(), { ...DAY_PERIOD, pageSize: 2, itemsMax: 3 }),
    ).rejects.toThrow(
      /^GET \/v1\/issuing\/transactions: more than 3 items for one period \(limit\); nothing was used$/,
    );
    const whole = await fetchIssuingPeriod(stripeClient(), { ...DAY_PERIOD, pageSize: 1 });
    expect(whole.transactions.map((t) => t.id).sort()).toEqual([
      'ipi_1ApiCaptureA',
      'ipi_1ApiCaptureB',
      'ipi_1ApiRefundA',
      'ipi_1ApiStripeOnly',
    ]);
    expect(whole.pages).toBe(4 + 2);
  });
});
