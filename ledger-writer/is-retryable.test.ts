// Proves which failures make the ledger writer retry a whole batch and which make it isolate entries
// (writer.ts isRetryable), on real errors: a Node error with a code of its own and a RAISE from
// Postgres (the ledger's balance trigger raises P0001) are isolated — before, any code that was not a
// SQLSTATE, and every SQLSTATE outside 22/23, meant retrying the same batch forever.
import postgres from 'postgres';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { freePort } from '../test/support/processes.ts';
import { rejection } from '../test/support/rejection.ts';
import { isRetryable } from './writer.ts';

let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});

afterAll(async () => {
  await services?.close();
});

it('isolates the record’s faults and bugs, retries outages and the deployment’s faults', async () => {
  const sql = services.database.sql;
  // Bugs and data: isolated (the poison entry is found and dead-lettered, the others written).
  const nodeError = await rejection(async () => Buffer.from(5 as unknown as string));
  expect((nodeError as { code: string }).code).toBe('ERR_INVALID_ARG_TYPE');
  expect(isRetryable(nodeError)).toBe(false);
  const raised = await rejection(() => sql`do $$ begin raise exception 'unbalanced'; end $$`);
  expect(isRetryable(raised)).toBe(false);
  expect(isRetryable(await rejection(() => sql`select 'x'::int`))).toBe(false);
  expect(isRetryable(new TypeError('x'))).toBe(false);

  // Outages and the deployment: the whole batch is retried.
  const timeout = await rejection(() =>
    sql.begin(async (tx) => {
      await tx`set local statement_timeout = 20`;
      await tx`select pg_sleep(5)`;
    }),
  );
  expect(isRetryable(timeout)).toBe(true);
  const undefinedTable = await rejection(() => sql`select * from no_such_table`);
  expect(isRetryable(undefinedTable)).toBe(true);
  const nobody = postgres(`postgres://postgres@127.0.0.1:${await freePort()}/postgres`, { max: 1 });
  const refused = await rejection(() => nobody`select 1`);
  await nobody.end({ timeout: 1 });
  expect(isRetryable(refused)).toBe(true);
});
