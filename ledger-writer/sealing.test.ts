// Proves merchant names are sealed end to end on the real PostgreSQL and a real SoftHSM2 token: the ledger writer stores only ciphertext (read raw with SQL and as credana_reconciliation; credana_support_ro reaches neither the column, the queue nor the data keys); the projection read opens it; a value moved to another authorization does not open; with the token closed the money and the row are still written and the name waits in merchant_names_unsealed until the writer seals it; a writer holding its key keeps sealing with the token gone and a newer data key it cannot unwrap; and `npm run keys -- rotate` (a process) keeps every sealed value readable.
import { randomUUID } from 'node:crypto';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../shared/db/client.ts';
import {
  createDataKey,
  createEnvelope,
  NEWEST_DATA_KEY_TTL_MS,
  pkcs11KeyWrapper,
} from '../shared/hsm/envelope.ts';
import {
  createMerchantNames,
  type MerchantNames,
  merchantNameContext,
  startMerchantNameSealing,
} from '../shared/hsm/merchant-names.ts';
import { openToken, pkcs11js } from '../shared/hsm/pkcs11.ts';
import { HOLD_EXPIRY_DEFAULTS } from '../shared/policy/hold-expiry.ts';
import { readTruth } from '../supabase/sync/projection-read.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedUser } from '../test/support/fixtures.ts';
import { testConfig } from '../test/support/hot-path.ts';
import { createTestSealing, type TestSealing } from '../test/support/hsm.ts';
import { runScript } from '../test/support/processes.ts';
import { sealQueuedNames } from './seal-queue.ts';
import { decisionFields } from './testing.ts';
import { type ApplyOptions, applyBatch, type ParsedEntry, parseEntry } from './write-batch.ts';

let services: TestServices;
let sealing: TestSealing;
/** The ledger writer's own role: what it seals with and where it writes are granted to it. */
let writerDatabase: Database;
const sql = () => services.database.sql;
const NAME = 'TEST GROCER'; // decisionFields' merchant name
let seq = 0;

beforeAll(async () => {
  services = await setUpServices();
  sealing = await createTestSealing(sql(), 'sealing');
  const url = new URL(services.databaseUrl);
  url.username = 'credana_ledger_writer';
  writerDatabase = createDatabase({
    url: url.toString(),
    poolMax: 2,
    applicationName: 'sealing-test-writer',
  });
});

afterAll(async () => {
  await writerDatabase?.close();
  await services?.close();
  sealing?.close();
});

function entry(flat: string[]): ParsedEntry {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  const result = parseEntry({ stream: 's', id: `${Date.now()}-${++seq}`, fields });
  if (!result.ok) throw new Error(result.error);
  return result.entry;
}

const options = (merchantNames: MerchantNames | null): ApplyOptions => ({
  holdExpiry: HOLD_EXPIRY_DEFAULTS,
  merchantNames,
});

/** Applies one approved decision of $12.50 for a new user; returns its ids. */
async function swipe(merchantNames: MerchantNames | null) {
  const { userId, cardId } = await seedUser(sql());
  const authorizationId = `iauth_${randomUUID().replaceAll('-', '')}`;
  const result = await applyBatch(
    sql(),
    [entry(decisionFields({ userId, cardId, grantedCents: 1_250n, authorizationId }))],
    options(merchantNames),
  );
  expect(result.applied).toBe(1);
  return { userId, cardId, authorizationId };
}

async function row(authorizationId: string) {
  const [r] = await sql()<{ held_cents: string; merchant_name_sealed: Buffer | null; updated_at: Date }[]>`
    select held_cents::text, merchant_name_sealed, updated_at from authorizations where id = ${authorizationId}`;
  return r!;
}

const queued = async (authorizationId: string) =>
  (
    await sql()<{ merchant_name: string }[]>`
    select merchant_name from merchant_names_unsealed where authorization_id = ${authorizationId}`
  ).map((r) => r.merchant_name);

/** Runs `statement` as `role` in a transaction that is rolled back. */
async function asRole<T>(role: string, statement: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  let result: T | undefined;
  await sql()
    .begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      result = await statement(tx);
      throw new Error('rollback');
    })
    .catch((error: Error) => {
      if (error.message !== 'rollback') throw error;
    });
  return result as T;
}

async function projectedNames(userId: string, names = sealing.another().names) {
  const truth = await readTruth(sql(), [userId], { activityPerUserMax: 10, merchantNames: names });
  return truth.activity.map((a) => a.merchant_name);
}

const sealedIds: string[] = [];

describe('authorizations.merchant_name_sealed', () => {
  it('holds ciphertext at rest, for SQL and for support; the projection opens it', async () => {
    const { userId, authorizationId } = await swipe(sealing.names);
    sealedIds.push(authorizationId);
    const stored = await row(authorizationId);
    expect(stored.held_cents).toBe('1250');
    expect(Buffer.isBuffer(stored.merchant_name_sealed)).toBe(true);
    expect(stored.merchant_name_sealed!.includes(Buffer.from(NAME))).toBe(false);
    expect(await queued(authorizationId)).toEqual([]);
    const [text] = await sql()`select encode(merchant_name_sealed, 'escape') as t from authorizations
      where id = ${authorizationId}`;
    expect(text?.['t']).not.toContain('GROCER');
    // Support reads authorizations one user at a time, and not this column at all (column grants,
    // drizzle/0012): not even the ciphertext; the queue and the keys not either.
    for (const table of ['merchant_names_unsealed', 'data_keys']) {
      await expect(
        asRole('credana_support_ro', (tx) => tx`select 1 from ${tx(table)}`),
      ).rejects.toMatchObject({ code: '42501' });
    }
    await expect(
      asRole('credana_support_ro', (tx) => tx`select merchant_name_sealed from authorizations`),
    ).rejects.toMatchObject({ code: '42501' });
    // Reconciliation reads whole rows: bytes, never the name.
    const seen = await asRole(
      'credana_reconciliation',
      (tx) => tx`select merchant_name_sealed from authorizations where id = ${authorizationId}`,
    );
    const seenBytes = seen[0]?.['merchant_name_sealed'] as Buffer;
    expect(seenBytes.equals(stored.merchant_name_sealed!)).toBe(true);
    expect(seenBytes.includes(Buffer.from(NAME))).toBe(false);
    // Exactly the roles that seal or open read the data keys; the hot path only queues plaintext.
    for (const role of ['credana_ledger_writer', 'credana_supabase_sync']) {
      await asRole(role, (tx) => tx`select id from data_keys`);
    }
    for (const role of ['credana_hot_path', 'credana_reconciliation', 'credana_indexer']) {
      await expect(asRole(role, (tx) => tx`select 1 from data_keys`)).rejects.toMatchObject({
        code: '42501',
      });
    }
    await expect(
      asRole('credana_hot_path', (tx) => tx`select 1 from merchant_names_unsealed`),
    ).rejects.toMatchObject({ code: '42501' });
    await expect(
      asRole('credana_reconciliation', (tx) => tx`select 1 from merchant_names_unsealed`),
    ).rejects.toMatchObject({ code: '42501' });

    expect(await projectedNames(userId)).toEqual([NAME]);
  });

  it('refuses a sealed value moved to another authorization', async () => {
    const from = sealedIds[0]!;
    const { userId, authorizationId } = await swipe(sealing.names);
    await sql()`update authorizations set merchant_name_sealed = (select merchant_name_sealed from authorizations
      where id = ${from}) where id = ${authorizationId}`;
    const failures: string[] = [];
    const names = sealing.another({ onError: (kind) => failures.push(kind) }).names;
    // The attacker's row shows no name (and the failure is the value's, not the key's).
    expect(await projectedNames(userId, names)).toEqual([null]);
    expect(failures).toEqual(['unreadable']);
    const [moved] = await sql()<{ s: Buffer }[]>`select merchant_name_sealed as s from authorizations
      where id = ${authorizationId}`;
    await expect(sealing.envelope.open(moved!.s, merchantNameContext(authorizationId))).rejects.toThrow(
      'sealed for another place or altered',
    );
    expect(await sealing.envelope.open(moved!.s, merchantNameContext(from))).toBe(NAME);
  });

  it('writes the money with the token down; the name waits unsealed, then the writer seals it', async () => {
    // A real session on the token, closed: every unwrap fails as the token being away does.
    const away = openToken({
      modulePath: sealing.softHsm.modulePath,
      tokenLabel: sealing.softHsm.tokenLabel,
      pin: sealing.softHsm.pin,
    });
    away.close();
    let nowMs = 1_000_000;
    const failures: string[] = [];
    const down = createMerchantNames({
      envelope: createEnvelope({ sql: sql(), wrapper: pkcs11KeyWrapper(away) }),
      nowMs: () => nowMs,
      retryAfterMs: 10_000,
      onError: (kind, error) => failures.push(`${kind}: ${(error as Error).message}`),
    });
    const { userId, authorizationId } = await swipe(down);
    const stored = await row(authorizationId);
    expect(stored.held_cents).toBe('1250');
    expect(stored.merchant_name_sealed).toBeNull();
    expect(await queued(authorizationId)).toEqual([NAME]);
    expect(failures).toEqual(['unavailable: hsm: the token session is closed']);
    // Backing off: the next swipes do not ask the token again until the back-off passes.
    await swipe(down);
    expect(failures).toHaveLength(1);
    nowMs += 10_001;
    await swipe(down);
    expect(failures).toHaveLength(2);
    // A writer without the token seals nothing and loses nothing.
    expect(await sealQueuedNames(sql(), down)).toEqual({ sealed: 0, more: true });
    expect(await queued(authorizationId)).toEqual([NAME]);
    // The token answers again (this writer's next start, or another writer): every queued name is
    // sealed — by the writer's own role, reading the data keys itself.
    const writerNames = createMerchantNames({
      envelope: createEnvelope({ sql: writerDatabase.sql, wrapper: pkcs11KeyWrapper(sealing.token) }),
    });
    const result = await sealQueuedNames(writerDatabase.sql, writerNames);
    expect(result.sealed).toBeGreaterThanOrEqual(3);
    expect(result.more).toBe(false);
    expect(await sql()`select 1 from merchant_names_unsealed`).toHaveLength(0);
    const after = await row(authorizationId);
    expect(after.updated_at.getTime()).toBeGreaterThan(stored.updated_at.getTime());
    expect(after.merchant_name_sealed!.includes(Buffer.from(NAME))).toBe(false);
    expect(await projectedNames(userId)).toEqual([NAME]);
    // Sealing again finds nothing, and a name sealed meanwhile is never overwritten by a stale queue row.
    expect(await sealQueuedNames(sql(), sealing.names)).toEqual({ sealed: 0, more: false });
    await sql()`insert into merchant_names_unsealed (authorization_id, merchant_name) values (${authorizationId}, 'OTHER')`;
    expect(await sealQueuedNames(sql(), sealing.names)).toEqual({ sealed: 0, more: false });
    expect(await sql()`select 1 from merchant_names_unsealed`).toHaveLength(0);
    expect(await projectedNames(userId)).toEqual([NAME]);
    sealedIds.push(authorizationId);
  });

  it('keeps sealing with the key it holds when the token goes away and a newer data key appears', async () => {
    const session = openToken({
      modulePath: sealing.softHsm.modulePath,
      tokenLabel: sealing.softHsm.tokenLabel,
      pin: sealing.softHsm.pin,
    });
    let nowMs = 5_000_000;
    const refreshFailures: unknown[] = [];
    const envelope = createEnvelope({
      sql: sql(),
      wrapper: pkcs11KeyWrapper(session),
      nowMs: () => nowMs,
      onRefreshError: (error) => refreshFailures.push(error),
    });
    const names = createMerchantNames({ envelope, nowMs: () => nowMs });
    const first = await swipe(names); // unwraps the newest data key: the writer's start
    const heldKey = envelope.keyIdOf((await row(first.authorizationId)).merchant_name_sealed!);
    session.close(); // the token goes away
    const newer = await createDataKey(sql(), pkcs11KeyWrapper(sealing.token), sealing.kekLabel);
    nowMs += NEWEST_DATA_KEY_TTL_MS + 1;
    const second = await swipe(names);
    const sealed = (await row(second.authorizationId)).merchant_name_sealed!;
    expect(envelope.keyIdOf(sealed)).toBe(heldKey);
    expect(newer).toBeGreaterThan(heldKey);
    expect(refreshFailures).toHaveLength(1);
    expect(await queued(second.authorizationId)).toEqual([]);
    expect(await projectedNames(second.userId)).toEqual([NAME]);
    sealedIds.push(first.authorizationId, second.authorizationId);
  });

  it('keeps every sealed value readable through `npm run keys -- rotate`, with the old KEK destroyed', async () => {
    const rotated = await runScript(
      'scripts/keys.ts',
      ['rotate', '--to-kek', 'kek-2', '--generate-kek', '--new-data-key'],
      {
        PATH: process.env['PATH'] ?? '',
        NODE_ENV: 'test',
        DATABASE_URL: services.databaseUrl,
        ...sealing.softHsm.env,
        ...sealing.softHsm.configEnv,
      },
    );
    expect({ code: rotated.code, stderr: rotated.stderr }).toEqual({ code: 0, stderr: '' });
    sealing.token.run((p, s) =>
      p.C_DestroyObject(s, sealing.token.findObject(p, s, pkcs11js.CKO_SECRET_KEY, sealing.kekLabel)),
    );
    // A process started after the rotation: every value opens, old data keys through the new KEK.
    const fresh = sealing.another();
    const rows = await sql()<
      { id: string; s: Buffer }[]
    >`select id, merchant_name_sealed as s from authorizations
      where id = any(${sealedIds})`;
    expect(rows).toHaveLength(sealedIds.length);
    for (const r of rows) expect(await fresh.names.open(r.id, r.s)).toBe(NAME);
    // New values are sealed with the new data key.
    const { authorizationId } = await swipe(fresh.names);
    const [{ newest } = { newest: 0 }] = await sql()<
      { newest: number }[]
    >`select max(id)::int as newest from data_keys`;
    expect(fresh.envelope.keyIdOf((await row(authorizationId)).merchant_name_sealed!)).toBe(newest);
  }, 120_000);
});

describe('the ledger writer at start (startMerchantNameSealing)', () => {
  const config = (env: Record<string, string>, nodeEnv: 'production' | 'test' = 'production') => ({
    ...testConfig(services, env),
    NODE_ENV: nodeEnv,
  });
  const token = () => ({
    PKCS11_MODULE: sealing.softHsm.modulePath,
    PKCS11_TOKEN_LABEL: sealing.softHsm.tokenLabel,
    PKCS11_PIN: sealing.softHsm.pin,
  });

  it('refuses in production without a token configured, and starts (names waiting) when the token is only away', async () => {
    expect(await startMerchantNameSealing(config({}), sql())).toEqual({
      ok: false,
      line: 'PKCS11_MODULE and PKCS11_TOKEN_LABEL are required to seal merchant names (docs/operations.md "Encryption at rest")',
    });
    expect(await startMerchantNameSealing(config({}, 'test'), sql())).toMatchObject({
      ok: true,
      sealing: null,
    });
    // No such token now (a network HSM that is down can look like this): it starts and names wait.
    const away = await startMerchantNameSealing(config({ ...token(), PKCS11_TOKEN_LABEL: 'absent' }), sql());
    if (!away.ok || away.sealing === null) throw new Error('expected a start without a key');
    expect(away.warning).toMatch(/^no data key now \(hsm: no token labelled "absent"\)/);
    expect(await away.sealing.names.seal('iauth_x', NAME)).toBeNull();
    away.sealing.close();
    const good = await startMerchantNameSealing(config(token()), sql());
    if (!good.ok || good.sealing === null) throw new Error('expected a start with a key');
    expect(good.warning).toBeNull();
    const sealed = await good.sealing.names.seal('iauth_x', NAME);
    expect(await sealing.envelope.open(sealed!, merchantNameContext('iauth_x'))).toBe(NAME);
    good.sealing.close();
  });

  it('refuses in production a database with no data key yet, or one wrapped under a KEK the token lacks', async () => {
    // (A PIN the token refuses is the same hsm_config refusal, shared/hsm/hsm.test.ts; in this process
    // the token is already logged in, so a wrong PIN cannot be shown here.)
    const empty = await setUpServices();
    try {
      const production = { ...testConfig(empty, token()), NODE_ENV: 'production' as const };
      expect(await startMerchantNameSealing(production, empty.database.sql)).toEqual({
        ok: false,
        line: 'envelope: no data key yet (npm run keys -- new-data-key)',
      });
      await empty.database
        .sql`insert into data_keys (kek_label, wrapped_key) values ('kek-gone', ${Buffer.alloc(60, 1)})`;
      expect(await startMerchantNameSealing(production, empty.database.sql)).toEqual({
        ok: false,
        line: `hsm: no secret key labelled "kek-gone" on token "${sealing.softHsm.tokenLabel}"`,
      });
    } finally {
      await empty.close();
    }
  });
});
