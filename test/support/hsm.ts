/**
 * For tests: a real SoftHSM2 token with a key-encryption key and a first data key in the test's
 * database, and the merchant-name sealing on it — as the ledger writer, the Supabase sync and the ops
 * CLI use it in production. One per test file (SoftHSM reads its configuration once per process).
 */
import type postgres from 'postgres';
import { createDataKey, createEnvelope, type Envelope, pkcs11KeyWrapper } from '../../shared/hsm/envelope.ts';
import {
  createMerchantNames,
  type MerchantNames,
  type MerchantNamesOptions,
} from '../../shared/hsm/merchant-names.ts';
import { generateAesKey, openToken, type Token } from '../../shared/hsm/pkcs11.ts';
import { createSoftHsmToken, type SoftHsmToken } from './softhsm.ts';

export interface TestSealing {
  softHsm: SoftHsmToken;
  token: Token;
  envelope: Envelope;
  names: MerchantNames;
  kekLabel: string;
  /** A fresh envelope and names on the same token (another process's view, with no key unwrapped yet). */
  another(options?: Omit<MerchantNamesOptions, 'envelope'> & { nowMs?: () => number }): {
    envelope: Envelope;
    names: MerchantNames;
  };
  close(): void;
}

export async function createTestSealing(
  sql: postgres.Sql,
  tokenLabel = 'credana-test',
): Promise<TestSealing> {
  const softHsm = createSoftHsmToken(tokenLabel);
  softHsm.useInThisProcess();
  const token = openToken({ modulePath: softHsm.modulePath, tokenLabel, pin: softHsm.pin });
  const kekLabel = 'kek-1';
  generateAesKey(token, kekLabel);
  const wrapper = pkcs11KeyWrapper(token);
  await createDataKey(sql, wrapper, kekLabel);
  const another: TestSealing['another'] = (options = {}) => {
    const envelope = createEnvelope({ sql, wrapper, ...(options.nowMs ? { nowMs: options.nowMs } : {}) });
    return { envelope, names: createMerchantNames({ ...options, envelope }) };
  };
  const { envelope, names } = another();
  return {
    softHsm,
    token,
    envelope,
    names,
    kekLabel,
    another,
    close() {
      envelope.forget();
      token.close();
      softHsm.destroy();
    },
  };
}
