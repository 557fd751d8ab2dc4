// Proves envelope encryption on the real PostgreSQL and a real SoftHSM2 token: sealed values are ciphertext at rest (raw bytes read with SQL, as the support role reads them; it cannot read the wrapped data keys at all), open only with the token's key-encryption key and only in the place they were sealed for, refuse tampering and swapped key rows, survive rotation to a new key-encryption key (the old one destroyed in the token) and a new data key; and `npm run keys` rotates as a process.
import { randomBytes } from 'node:crypto';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { runScript } from '../../test/support/processes.ts';
import { createSoftHsmToken, type SoftHsmToken } from '../../test/support/softhsm.ts';
import {
  createDataKey,
  createEnvelope,
  EnvelopeError,
  pkcs11KeyWrapper,
  rewrapDataKeys,
} from './envelope.ts';
import { generateAesKey, HsmError, openToken, type Token } from './index.ts';
import { pkcs11js } from './pkcs11.ts';

let softHsm: SoftHsmToken;
let token: Token;
let services: TestServices;
const sql = () => services.database.sql;
const EMAIL = `alice.${randomBytes(4).toString('hex')}@example.com`;

beforeAll(async () => {
  softHsm = createSoftHsmToken('envelope');
  softHsm.useInThisProcess();
  token = openToken({ modulePath: softHsm.modulePath, tokenLabel: softHsm.tokenLabel, pin: softHsm.pin });
  generateAesKey(token, 'kek-1');
  services = await setUpServices();
  // A sensitive column as a service would store it, readable by the support role like the tables it sees.
  await sql()`create table sealed_probe (id int primary key, email bytea not null)`;
  await sql()`grant select on sealed_probe to credana_support_ro`;
});

afterAll(async () => {
  token?.close();
  await services?.close();
  softHsm?.destroy();
});

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

describe('envelope encryption with a key-encryption key in the HSM', () => {
  it('stores only ciphertext; the support role sees bytes and cannot read the data keys', async () => {
    const wrapper = pkcs11KeyWrapper(token);
    const keyId = await createDataKey(sql(), wrapper, 'kek-1');
    const envelope = createEnvelope({ sql: sql(), wrapper });
    const sealed = await envelope.seal(EMAIL, 'sealed_probe.email:1');
    expect(envelope.keyIdOf(sealed)).toBe(keyId);
    await sql()`insert into sealed_probe (id, email) values (1, ${sealed})`;

    const [raw] = await sql()`select email, encode(email, 'escape') as text from sealed_probe where id = 1`;
    expect(Buffer.isBuffer(raw?.['email'])).toBe(true);
    const rawEmail = raw?.['email'] as Buffer;
    expect(rawEmail.includes(Buffer.from(EMAIL))).toBe(false);
    expect(raw?.['text']).not.toContain('example.com');
    // Two seals of one value differ (fresh IV): equal values cannot be spotted in bulk.
    expect((await envelope.seal(EMAIL, 'sealed_probe.email:1')).equals(sealed)).toBe(false);

    // The wrapped data key is not the data key.
    const [keyRow] = await sql()`select wrapped_key from data_keys where id = ${keyId}`;
    const dataKey = wrapper.unwrap(
      'kek-1',
      keyRow?.['wrapped_key'] as Buffer,
      Buffer.from(`credana:data-key:${keyId}`),
    );
    expect(dataKey.length).toBe(32);
    const wrapped = keyRow?.['wrapped_key'] as Buffer;
    expect(wrapped.includes(dataKey)).toBe(false);

    const seen = await asRole('credana_support_ro', (tx) => tx`select email from sealed_probe where id = 1`);
    const seenEmail = seen[0]?.['email'] as Buffer;
    expect(Buffer.isBuffer(seenEmail)).toBe(true);
    expect(seenEmail.includes(Buffer.from(EMAIL))).toBe(false);
    await expect(
      asRole('credana_support_ro', (tx) => tx`select wrapped_key from data_keys`),
    ).rejects.toMatchObject({ code: '42501' });
    // Only the roles that seal or open a column read them (0013: the ledger writer and the Supabase sync).
    for (const role of ['credana_hot_path', 'credana_indexer', 'credana_reconciliation']) {
      await expect(asRole(role, (tx) => tx`select 1 from data_keys`)).rejects.toMatchObject({
        code: '42501',
      });
    }

    // The role that needs the plaintext: a process holding the token.
    expect(
      await createEnvelope({ sql: sql(), wrapper }).open(raw?.['email'] as Buffer, 'sealed_probe.email:1'),
    ).toBe(EMAIL);
  });

  it('opens a value only where it was sealed, never altered, and only with the right key-encryption key', async () => {
    const wrapper = pkcs11KeyWrapper(token);
    const envelope = createEnvelope({ sql: sql(), wrapper });
    const sealed = await envelope.seal(EMAIL, 'sealed_probe.email:1');
    // Copied into another row (an attacker with write access moving a value to their own account).
    await expect(envelope.open(sealed, 'sealed_probe.email:2')).rejects.toThrow(EnvelopeError);
    for (const at of [0, 3, 10, 20, sealed.length - 1]) {
      const altered = Buffer.from(sealed);
      altered[at] = (altered[at] ?? 0) ^ 0x01;
      await expect(
        createEnvelope({ sql: sql(), wrapper }).open(altered, 'sealed_probe.email:1'),
      ).rejects.toThrow();
    }
    // A second data key, then the two wrapped keys swapped between rows: neither unwraps.
    const second = await createDataKey(sql(), wrapper, 'kek-1');
    const first = second - 1;
    const sealedSecond = await createEnvelope({ sql: sql(), wrapper }).seal(EMAIL, 'sealed_probe.email:1');
    await sql()`update data_keys d set wrapped_key = o.wrapped_key from data_keys o
      where (d.id, o.id) in ((${first}, ${second}), (${second}, ${first}))`;
    await expect(
      createEnvelope({ sql: sql(), wrapper }).open(sealedSecond, 'sealed_probe.email:1'),
    ).rejects.toThrow(HsmError);
    await sql()`update data_keys d set wrapped_key = o.wrapped_key from data_keys o
      where (d.id, o.id) in ((${first}, ${second}), (${second}, ${first}))`;
    expect(await createEnvelope({ sql: sql(), wrapper }).open(sealedSecond, 'sealed_probe.email:1')).toBe(
      EMAIL,
    );
    // A key row naming a key-encryption key the token does not hold opens nothing.
    await sql()`update data_keys set kek_label = 'kek-absent' where id = ${second}`;
    await expect(
      createEnvelope({ sql: sql(), wrapper }).open(sealedSecond, 'sealed_probe.email:1'),
    ).rejects.toThrow('hsm: no secret key labelled "kek-absent" on token "envelope"');
    await sql()`update data_keys set kek_label = 'kek-1' where id = ${second}`;
  });

  it('re-wraps every data key under a new key-encryption key; old values open after the old one is destroyed', async () => {
    const wrapper = pkcs11KeyWrapper(token);
    const [{ email } = { email: Buffer.alloc(0) }] = await sql()<
      { email: Buffer }[]
    >`select email from sealed_probe where id = 1`;
    const before =
      await sql()`select id, kek_label, encode(wrapped_key, 'hex') as w from data_keys order by id`;
    generateAesKey(token, 'kek-2');
    const result = await rewrapDataKeys(sql(), wrapper, 'kek-2');
    expect(result).toEqual({ rewrapped: before.length, already: 0 });
    const after =
      await sql()`select id, kek_label, encode(wrapped_key, 'hex') as w, rewrapped_at from data_keys order by id`;
    for (const [i, row] of after.entries()) {
      expect(row['kek_label']).toBe('kek-2');
      expect(row['w']).not.toBe(before[i]?.['w']);
      expect(row['rewrapped_at']).not.toBeNull();
    }
    // The old key-encryption key is destroyed in the token: nothing needs it any more.
    token.run((p, s) => p.C_DestroyObject(s, token.findObject(p, s, pkcs11js.CKO_SECRET_KEY, 'kek-1')));
    expect(await createEnvelope({ sql: sql(), wrapper }).open(email, 'sealed_probe.email:1')).toBe(EMAIL);
    expect(await rewrapDataKeys(sql(), wrapper, 'kek-2')).toEqual({ rewrapped: 0, already: before.length });

    // A new data key seals what comes next; values sealed before keep their key.
    let nowMs = 0;
    const envelope = createEnvelope({ sql: sql(), wrapper, nowMs: () => nowMs });
    const oldId = envelope.keyIdOf(await envelope.seal('x', 'c'));
    const newId = await createDataKey(sql(), wrapper, 'kek-2');
    nowMs += 61_000;
    expect(envelope.keyIdOf(await envelope.seal('y', 'c'))).toBe(newId);
    expect(newId).toBeGreaterThan(oldId);
    expect(await envelope.open(email, 'sealed_probe.email:1')).toBe(EMAIL);
  });

  it('rotates with `npm run keys -- rotate` as a process, and refuses bad usage in one line', async () => {
    const env = {
      PATH: process.env['PATH'] ?? '',
      NODE_ENV: 'test',
      DATABASE_URL: services.databaseUrl,
      ...softHsm.env,
      ...softHsm.configEnv,
    };
    const keysBefore = Number((await sql()`select count(*)::int as n from data_keys`)[0]?.['n']);
    const rotated = await runScript(
      'scripts/keys.ts',
      ['rotate', '--to-kek', 'kek-3', '--generate-kek', '--new-data-key'],
      env,
    );
    expect(rotated.stderr).toBe('');
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toBe(
      `keys: re-wrapped ${keysBefore} data key(s) under "kek-3" (0 already were)\nkeys: data key ${keysBefore + 1} wrapped under "kek-3"; new values are sealed with it\n`,
    );
    const status = await runScript('scripts/keys.ts', ['status'], env);
    expect([status.code, status.stdout]).toEqual([
      0,
      `keys: ${keysBefore + 1} data key(s) wrapped under "kek-3"\n`,
    ]);
    const usage = await runScript('scripts/keys.ts', ['rotate'], env);
    expect(usage.code).toBe(64);
    expect(usage.stderr).toMatch(/^keys: rotate --to-kek needs a label[^\n]+\n$/);
    expect(usage.stdout + usage.stderr).not.toContain(softHsm.pin);
    const wrongKek = await runScript('scripts/keys.ts', ['new-data-key', '--kek', 'kek-missing'], env);
    expect([wrongKek.code, wrongKek.stderr]).toEqual([
      78,
      'keys: hsm: no secret key labelled "kek-missing" on token "envelope"\n',
    ]);
  }, 120_000);
});
