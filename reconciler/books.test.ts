// Proves the books job passes clean books written by the real hot path and ledger writer, and reports exactly an injected unbalanced transfer, a tampered audit row and a balance that differs from its entries — also when the pass is split over many bounded runs — on real Postgres (damage injected as superuser with triggers off).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import { type HotPath, post, startHotPath } from '../test/support/hot-path.ts';
import { asSuperuserWithoutTriggers, drainOutbox } from '../test/support/reconcile.ts';
import { authorizationRequest, transactionEvent } from '../test/support/stripe.ts';
import { booksJob } from './books.ts';
import { runRecorded } from './runs.ts';
import type { Finding } from './types.ts';

const PRICE = 300_000_000_000n;
let services: TestServices;
let hotPath: HotPath;
let userIds: string[] = [];

beforeAll(async () => {
  services = await setUpServices();
  const sql = services.database.sql;
  await seedAsset(sql, services.redis, services.prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
  hotPath = await startHotPath(services, { VELOCITY_LIMIT_PER_MIN: '1000' });
  for (let i = 0; i < 4; i++) {
    const user = await seedUser(sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
    });
    userIds.push(user.userId);
    for (let j = 0; j < 3; j++) {
      const authorizationId = `iauth_b${i}${j}${user.userId.slice(0, 6)}`;
      const res = await post(
        hotPath,
        '/stripe/authorizations',
        authorizationRequest({ cardId: user.cardId, amountCents: 1_000 + j, authorizationId }),
      );
      expect(res.json.approved).toBe(true);
      if (j === 0) {
        const capture = transactionEvent({
          cardId: user.cardId,
          type: 'capture',
          amountCents: 800,
          authorizationId,
          createdS: Math.floor(Date.now() / 1000),
        });
        expect((await post(hotPath, '/stripe/events', capture)).status).toBe(200);
      }
    }
  }
  await drainOutbox(services.redis, sql, services.prefix);
  userIds = userIds.sort();
});

afterAll(async () => {
  await hotPath?.close();
  await services?.close();
});

const summary = (findings: Finding[]) =>
  findings.map((f) => `${f.kind}:${f['ref'] ?? f['auditId'] ?? f['userId']}:${f['account'] ?? ''}`).sort();

describe('books job', () => {
  it('finds nothing in books the writer kept', async () => {
    const result = await runRecorded({ sql: services.sqlFor('credana_reconciliation') }, 'books', booksJob());
    expect(result.findings).toEqual([]);
    expect(result.status).toBe('ok');
    expect(result.checked).toBeGreaterThan(20);
  });

  it('reports exactly the injected damage, in one run and split over bounded runs', async () => {
    const sql = services.database.sql;
    await asSuperuserWithoutTriggers(
      services.databaseUrl,
      `with t as (insert into ledger_transfers (ref, kind) values ('evil:unbalanced', 'adjustment') returning id)
       insert into ledger_entries (transfer_id, account, user_id, amount_cents) select id, 'program_holds', null, 500 from t`,
    );
    const [victim] = await sql<
      { id: string }[]
    >`select id::text from audit_log order by audit_log.id offset 3 limit 1`;
    await asSuperuserWithoutTriggers(
      services.databaseUrl,
      `update audit_log set data = '{"grantedCents": "999999"}' where id = ${victim!.id}`,
    );
    await sql`update credit_accounts set unsettled_cents = unsettled_cents + 1 where user_id = ${userIds[2]!}`;
    const expected = [
      `audit_row_tampered:${victim!.id}:`,
      `balance_mismatch:${userIds[2]}:user_unsettled`,
      'transfer_unbalanced:evil:unbalanced:',
    ];

    const whole = await runRecorded({ sql }, 'books', booksJob());
    expect(summary(whole.findings)).toEqual(expected);
    expect(whole.status).toBe('findings');

    // Tiny batches and a tiny per-run bound: the same findings, gathered over several resumed runs.
    const small = booksJob({
      transfersPerBatch: 3,
      usersPerBatch: 1,
      auditRowsPerBatch: 4,
      rowsPerRunMax: 5,
    });
    const gathered: Finding[] = [];
    let runs = 0;
    for (;;) {
      const r = await runRecorded({ sql }, 'books-small', small);
      gathered.push(...r.findings);
      runs++;
      if (r.cursor === null || runs > 100) break;
    }
    expect(runs).toBeGreaterThan(3);
    expect(summary(gathered)).toEqual(expected);
  });
});
