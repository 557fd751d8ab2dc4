// Proves the ledger writer outlives its consumer group (what Redis restarted empty does to it): a real
// writer on real Redis and Postgres writes an entry, every outbox stream is then deleted under it (group
// and all), and the next entry is still written, with the group recreated and counted; before the fix
// the writer retried NOGROUP forever and wrote nothing more until restarted.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { deleteKeys, duplicateRedis } from '../shared/redis/client.ts';
import { allOutboxKeys } from '../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedUser } from '../test/support/fixtures.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import { addEntry, decisionFields } from './testing.ts';
import { createLedgerWriter, type LedgerWriter } from './writer.ts';

let services: TestServices;
let writer: LedgerWriter | null = null;

beforeAll(async () => {
  services = await setUpServices();
});
afterAll(async () => {
  await writer?.stop();
  await services?.close();
});

async function heldCents(userId: string): Promise<bigint> {
  const [row] = await services.database.sql<{ holds_cents: string }[]>`
    select holds_cents::text from credit_accounts where user_id = ${userId}`;
  return BigInt(row?.holds_cents ?? '-1');
}

async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  const until = Date.now() + 15_000;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

it('recreates its consumer group when the streams vanish, and writes what comes after', async () => {
  const { userId, cardId } = await seedUser(services.database.sql);
  const metrics = createLedgerWriterMetrics();
  writer = createLedgerWriter({
    redis: duplicateRedis(services.redis),
    sql: services.sqlFor('credana_ledger_writer'),
    prefix: services.prefix,
    consumer: 'group-loss-writer',
    batchMax: 50,
    batchWaitMs: 20,
    metrics,
  });
  await writer.start();
  await addEntry(
    services.redis,
    services.prefix,
    userId,
    decisionFields({ userId, cardId, grantedCents: 1_000n }),
  );
  await waitFor(async () => (await heldCents(userId)) === 1_000n, 'the first entry');

  // What an empty restart leaves: no stream, no group.
  await deleteKeys(services.redis, allOutboxKeys(services.prefix));
  await addEntry(
    services.redis,
    services.prefix,
    userId,
    decisionFields({ userId, cardId, grantedCents: 2_500n }),
  );
  await waitFor(async () => (await heldCents(userId)) === 3_500n, 'the entry appended after the loss');
  const text = await metrics.registry.metrics();
  expect(text).toMatch(/credana_ledger_consumer_groups_recreated_total [1-9]/);
});
