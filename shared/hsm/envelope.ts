/**
 * Envelope encryption at rest (docs/operations.md "Encryption at rest"): a column value is sealed with
 * AES-256-GCM under a data key; the data key is stored only wrapped (AES-GCM inside the HSM, under a
 * key-encryption key that never leaves the token) in `data_keys`. A process that seals or opens asks
 * the token to unwrap a data key once and keeps it in memory; the database alone, a dump of it, a
 * backup or a support role reading the column sees only ciphertext.
 *
 * A sealed value (bytea): version 0x01 ‖ data key id (uint32, big-endian) ‖ iv (12) ‖ ciphertext ‖
 * tag (16). The additional data is the header and a caller-given `context` naming the value's place
 * ("authorizations.merchant_name:iauth_…"): a sealed value copied into another row or column does not
 * open. A data key's wrapping is bound to its id the same way.
 *
 * Rotation (`npm run keys -- rotate --to-kek <label>`) re-wraps every data key under a new
 * key-encryption key — sealed values are untouched, so it is quick whatever the table sizes — after
 * which the old key-encryption key can be destroyed in the token. A new data key
 * (`npm run keys -- new-data-key`) seals what is written from then on; old values keep opening with
 * their own key.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type postgres from 'postgres';
import {
  dataKeyById,
  dataKeysForUpdate,
  insertDataKey,
  newestDataKey,
  nextDataKeyId,
  rewrapDataKey,
} from '../db/queries/data-keys.ts';
import { HsmError, pkcs11js, type Token } from './pkcs11.ts';

/** Wraps and unwraps data keys with a key-encryption key it keeps (the HSM; a cloud KMS in production). */
export interface KeyWrapper {
  /** iv ‖ ciphertext ‖ tag (60 bytes for a 32-byte key), bound to `aad`. */
  wrap(kekLabel: string, dataKey: Buffer, aad: Buffer): Buffer;
  /** Throws `HsmError` when `wrapped` was not made by this key-encryption key with this `aad`. */
  unwrap(kekLabel: string, wrapped: Buffer, aad: Buffer): Buffer;
}

const GCM_IV_BYTES = 12;
const GCM_TAG_BYTES = 16;
const DATA_KEY_BYTES = 32;
const VERSION = 0x01;
const HEADER_BYTES = 1 + 4 + GCM_IV_BYTES;
/** How long a process seals with the newest data key it knows before looking for a newer one. */
export const NEWEST_DATA_KEY_TTL_MS = 60_000;

/** AES-GCM with a key-encryption key (a CKK_AES secret key labelled `kekLabel`) inside the token. */
export function pkcs11KeyWrapper(token: Token): KeyWrapper {
  const mechanism = (iv: Buffer, aad: Buffer) => ({
    mechanism: pkcs11js.CKM_AES_GCM,
    parameter: { type: pkcs11js.CK_PARAMS_AES_GCM, iv, aad, tagBits: GCM_TAG_BYTES * 8 },
  });
  return {
    wrap(kekLabel, dataKey, aad) {
      const iv = randomBytes(GCM_IV_BYTES);
      return token.run((p, s) => {
        const kek = token.findObject(p, s, pkcs11js.CKO_SECRET_KEY, kekLabel);
        p.C_EncryptInit(s, mechanism(iv, aad), kek);
        const sealed = p.C_Encrypt(s, dataKey, Buffer.alloc(dataKey.length + GCM_TAG_BYTES + 16));
        return Buffer.concat([iv, sealed]);
      });
    },
    unwrap(kekLabel, wrapped, aad) {
      const iv = wrapped.subarray(0, GCM_IV_BYTES);
      return token.run((p, s) => {
        const kek = token.findObject(p, s, pkcs11js.CKO_SECRET_KEY, kekLabel);
        p.C_DecryptInit(s, mechanism(iv, aad), kek);
        try {
          return Buffer.from(p.C_Decrypt(s, wrapped.subarray(GCM_IV_BYTES), Buffer.alloc(wrapped.length)));
        } catch {
          throw new HsmError(
            'hsm_config',
            `hsm: a data key does not unwrap under "${kekLabel}" (wrong key or altered)`,
          );
        }
      });
    },
  };
}

const dataKeyAad = (id: number) => Buffer.from(`credana:data-key:${id}`, 'utf8');

/** A new data key wrapped under `kekLabel`; returns its id. The plaintext key is not kept. */
export async function createDataKey(
  sql: postgres.Sql,
  wrapper: KeyWrapper,
  kekLabel: string,
): Promise<number> {
  const id = await nextDataKeyId(sql);
  const key = randomBytes(DATA_KEY_BYTES);
  try {
    await insertDataKey(sql, { id, kekLabel, wrappedKey: wrapper.wrap(kekLabel, key, dataKeyAad(id)) });
  } finally {
    key.fill(0);
  }
  return id;
}

/**
 * Re-wraps every data key under `toKekLabel`, in one transaction (all or none). Keys already wrapped
 * under it are left alone, so an interrupted rotation is finished by running it again.
 */
export async function rewrapDataKeys(
  sql: postgres.Sql,
  wrapper: KeyWrapper,
  toKekLabel: string,
): Promise<{ rewrapped: number; already: number }> {
  return (await sql.begin(async (tx) => {
    let rewrapped = 0;
    let already = 0;
    for (const row of await dataKeysForUpdate(tx)) {
      if (row.kekLabel === toKekLabel) {
        already += 1;
        continue;
      }
      const aad = dataKeyAad(row.id);
      const key = wrapper.unwrap(row.kekLabel, row.wrappedKey, aad);
      try {
        await rewrapDataKey(tx, row.id, toKekLabel, wrapper.wrap(toKekLabel, key, aad));
      } finally {
        key.fill(0);
      }
      rewrapped += 1;
    }
    return { rewrapped, already };
  })) as { rewrapped: number; already: number };
}

/**
 * Why a value does not open or seal, for callers that must tell them apart without reading the message:
 * `no_data_key` (the value names a key the database does not hold), `no_data_key_yet` (nothing to seal
 * with: npm run keys -- new-data-key), `not_sealed`, `altered` (sealed for another context or changed).
 */
export type EnvelopeProblem = 'no_data_key' | 'no_data_key_yet' | 'not_sealed' | 'altered';

export class EnvelopeError extends Error {
  readonly code = 'envelope_unreadable';
  constructor(
    readonly problem: EnvelopeProblem,
    message: string,
  ) {
    super(message);
  }
}

export interface Envelope {
  /** Seals `plaintext` for `context` with the newest data key. */
  seal(plaintext: string, context: string): Promise<Buffer>;
  /** Opens a value sealed for `context`; `EnvelopeError` when it was sealed elsewhere or altered. */
  open(sealed: Buffer, context: string): Promise<string>;
  /** The data key id a sealed value names (for re-sealing with a newer key). */
  keyIdOf(sealed: Buffer): number;
  /** Whether this process holds (unwrapped) the data key `sealed` names: opening it needs no token. */
  holdsKeyOf(sealed: Buffer): boolean;
  /** Drops the unwrapped data keys this process holds. */
  forget(): void;
}

/**
 * Seals and opens column values with the data keys in `data_keys`, unwrapping each through `wrapper`
 * once per process.
 *
 * @example
 *   const envelope = createEnvelope({ sql, wrapper: pkcs11KeyWrapper(token) });
 *   const sealed = await envelope.seal('ACME GROCER', `authorizations.merchant_name:${id}`);
 */
export function createEnvelope(deps: {
  sql: postgres.Sql;
  wrapper: KeyWrapper;
  nowMs?: () => number;
  /** Told when looking for a newer data key failed and the one held keeps sealing. */
  onRefreshError?: (error: unknown) => void;
}): Envelope {
  const keys = new Map<number, Buffer>();
  const now = deps.nowMs ?? Date.now;
  let newest: { id: number; atMs: number } | null = null;
  const unwrapped = async (id: number): Promise<Buffer> => {
    const cached = keys.get(id);
    if (cached !== undefined) return cached;
    const row = await dataKeyById(deps.sql, id);
    if (row === null) throw new EnvelopeError('no_data_key', `envelope: no data key ${id}`);
    const key = deps.wrapper.unwrap(row.kekLabel, row.wrappedKey, dataKeyAad(id));
    keys.set(id, key);
    return key;
  };
  const aadOf = (header: Buffer, context: string) => Buffer.concat([header, Buffer.from(context, 'utf8')]);
  return {
    async seal(plaintext, context) {
      if (newest === null || now() - newest.atMs > NEWEST_DATA_KEY_TTL_MS) {
        try {
          const row = await newestDataKey(deps.sql);
          if (row === null)
            throw new EnvelopeError(
              'no_data_key_yet',
              'envelope: no data key yet (npm run keys -- new-data-key)',
            );
          // Unwrapped before it is adopted: a newer key the token cannot unwrap now never replaces one held.
          await unwrapped(row.id);
          newest = { id: row.id, atMs: now() };
        } catch (error) {
          if (newest === null) throw error;
          // The database or the token does not answer: keep sealing with the key this process holds
          // (a sealed value names its key, so it opens the same), and look again after the TTL.
          newest = { id: newest.id, atMs: now() };
          deps.onRefreshError?.(error);
        }
      }
      const key = await unwrapped(newest.id);
      const header = Buffer.alloc(HEADER_BYTES);
      header.writeUInt8(VERSION, 0);
      header.writeUInt32BE(newest.id, 1);
      randomBytes(GCM_IV_BYTES).copy(header, 5);
      const cipher = createCipheriv('aes-256-gcm', key, header.subarray(5));
      cipher.setAAD(aadOf(header, context));
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return Buffer.concat([header, body, cipher.getAuthTag()]);
    },
    async open(sealed, context) {
      if (sealed.length < HEADER_BYTES + GCM_TAG_BYTES || sealed[0] !== VERSION) {
        throw new EnvelopeError('not_sealed', 'envelope: not a sealed value');
      }
      const key = await unwrapped(sealed.readUInt32BE(1));
      const header = sealed.subarray(0, HEADER_BYTES);
      const decipher = createDecipheriv('aes-256-gcm', key, header.subarray(5));
      decipher.setAAD(aadOf(header, context));
      decipher.setAuthTag(sealed.subarray(sealed.length - GCM_TAG_BYTES));
      try {
        const body = sealed.subarray(HEADER_BYTES, sealed.length - GCM_TAG_BYTES);
        return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
      } catch {
        throw new EnvelopeError('altered', 'envelope: the value was sealed for another place or altered');
      }
    },
    keyIdOf(sealed) {
      if (sealed.length < HEADER_BYTES || sealed[0] !== VERSION)
        throw new EnvelopeError('not_sealed', 'envelope: not a sealed value');
      return sealed.readUInt32BE(1);
    },
    holdsKeyOf(sealed) {
      return sealed.length >= HEADER_BYTES && sealed[0] === VERSION && keys.has(sealed.readUInt32BE(1));
    },
    forget() {
      for (const key of keys.values()) key.fill(0);
      keys.clear();
      newest = null;
    },
  };
}
