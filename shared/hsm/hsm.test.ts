// Proves the PKCS#11 signer on a real SoftHSM2 token (temporary token directory): a secp256k1 key generated in the token signs messages, typed data, raw hashes and transactions that recover to the address derived from its CKA_EC_POINT, always with a low s; the token refuses to give the key out (CKA_VALUE, wrapping, flipping CKA_EXTRACTABLE); a dropped session is reopened; a key planted under a signer's label stops signing; a unknown token or label is one clear error.
import { randomBytes } from 'node:crypto';
import {
  type Hex,
  keccak256,
  parseTransaction,
  recoverAddress,
  recoverMessageAddress,
  recoverTransactionAddress,
  recoverTypedDataAddress,
} from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSoftHsmToken, type SoftHsmToken } from '../../test/support/softhsm.ts';
import {
  ecdsaComponents,
  ethereumAccount,
  generateAesKey,
  generateSecp256k1KeyPair,
  HsmError,
  openToken,
  pkcs11Signer,
  SECP256K1_N,
  type Token,
  toEthereumSignature,
} from './index.ts';
import { pkcs11js } from './pkcs11.ts';

let softHsm: SoftHsmToken;
let token: Token;

beforeAll(() => {
  softHsm = createSoftHsmToken('hsm-unit');
  softHsm.useInThisProcess();
  token = openToken({ modulePath: softHsm.modulePath, tokenLabel: softHsm.tokenLabel, pin: softHsm.pin });
  generateSecp256k1KeyPair(token, 'signer');
});

afterAll(() => {
  token?.close();
  softHsm?.destroy();
});

const typedData = {
  domain: {
    name: 'Credana',
    version: '1',
    chainId: 31_337,
    verifyingContract: '0x5fbdb2315678afecb367f032d93f642f64180aa3',
  },
  types: {
    Approval: [
      { name: 'user', type: 'address' },
      { name: 'amount', type: 'uint256' },
    ],
  },
  primaryType: 'Approval',
  message: { user: '0x70997970c51812dc3a010c7d01b50e0d17dc79c8', amount: 10n ** 18n },
} as const;

describe('a secp256k1 key in the token', () => {
  it('signs messages, typed data and hashes that recover to the address of its public key', async () => {
    const account = await ethereumAccount(pkcs11Signer(token, 'signer'));
    expect(account.address).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect(account.source).toBe('custom');
    const message = `credana ${randomBytes(4).toString('hex')}`;
    const messageSignature = await account.signMessage({ message });
    expect(await recoverMessageAddress({ message, signature: messageSignature })).toBe(account.address);
    const typedSignature = await account.signTypedData(typedData);
    expect(await recoverTypedDataAddress({ ...typedData, signature: typedSignature })).toBe(account.address);
    // Many hashes: about half of the token's raw signatures have a high s and must be normalised, and
    // both recovery bits must turn up.
    const parities = new Set<number>();
    for (let i = 0; i < 24; i++) {
      const hash = keccak256(randomBytes(32));
      const signature = await account.sign?.({ hash });
      expect(signature).toBeDefined();
      const s = BigInt(`0x${(signature as Hex).slice(66, 130)}`);
      expect(s <= SECP256K1_N / 2n).toBe(true);
      const v = Number.parseInt((signature as Hex).slice(130), 16);
      parities.add(v - 27);
      expect(await recoverAddress({ hash, signature: signature as Hex })).toBe(account.address);
    }
    expect([...parities].sort()).toEqual([0, 1]);
  });

  it('signs transactions of every common type that recover to its address', async () => {
    const account = await ethereumAccount(pkcs11Signer(token, 'signer'));
    const base = {
      to: '0x70997970c51812dc3a010c7d01b50e0d17dc79c8',
      value: 1n,
      nonce: 7,
      gas: 21_000n,
      chainId: 31_337,
    } as const;
    for (const tx of [
      { ...base, type: 'eip1559', maxFeePerGas: 2_000_000_000n, maxPriorityFeePerGas: 1n },
      { ...base, type: 'eip2930', gasPrice: 1_000_000_000n, accessList: [] },
      { ...base, type: 'legacy', gasPrice: 1_000_000_000n },
    ] as const) {
      const serialized = await account.signTransaction(tx);
      expect(parseTransaction(serialized).type).toBe(tx.type);
      expect(await recoverTransactionAddress({ serializedTransaction: serialized as never })).toBe(
        account.address,
      );
    }
  });

  it('turns a high s or a DER signature into the same low-s Ethereum signature', async () => {
    const signer = pkcs11Signer(token, 'signer');
    const account = await ethereumAccount(signer);
    const hash = keccak256(randomBytes(32));
    const raw = await signer.signDigest(Buffer.from(hash.slice(2), 'hex'));
    const { r, s } = ecdsaComponents(raw);
    const expected = await toEthereumSignature(hash, raw, account.address);
    const bytes = (value: bigint) => Buffer.from(value.toString(16).padStart(64, '0'), 'hex');
    const flipped = Buffer.concat([bytes(r), bytes(SECP256K1_N - s)]);
    expect(await toEthereumSignature(hash, flipped, account.address)).toEqual(expected);
    // DER as a KMS returns it: INTEGERs with a leading zero when the top bit is set.
    const integer = (value: bigint) => {
      let body = bytes(value);
      while (body.length > 1 && body[0] === 0 && ((body[1] ?? 0) & 0x80) === 0) body = body.subarray(1);
      if (((body[0] ?? 0) & 0x80) !== 0) body = Buffer.concat([Buffer.from([0]), body]);
      return Buffer.concat([Buffer.from([0x02, body.length]), body]);
    };
    const sequence = Buffer.concat([integer(r), integer(s)]);
    const der = Buffer.concat([Buffer.from([0x30, sequence.length]), sequence]);
    expect(await toEthereumSignature(hash, der, account.address)).toEqual(expected);
    // A signature of another key (or a corrupted one) is refused, not passed on.
    const other = Buffer.concat([bytes(r), bytes((s * 3n) % SECP256K1_N)]);
    await expect(toEthereumSignature(hash, other, account.address)).rejects.toThrow(/does not recover/);
    expect(() => ecdsaComponents(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]))).toThrow(HsmError);
  });

  it('never gives the private key out: CKA_VALUE, wrapping and making it extractable are refused', () => {
    generateAesKey(token, 'wrapping-attempt');
    token.run((p, s) => {
      const key = token.findObject(p, s, pkcs11js.CKO_PRIVATE_KEY, 'signer');
      const [sensitive, extractable, neverExtractable] = p.C_GetAttributeValue(s, key, [
        { type: pkcs11js.CKA_SENSITIVE },
        { type: pkcs11js.CKA_EXTRACTABLE },
        { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
      ]);
      expect([sensitive?.value[0], extractable?.value[0], neverExtractable?.value[0]]).toEqual([1, 0, 1]);
      expect(() => p.C_GetAttributeValue(s, key, [{ type: pkcs11js.CKA_VALUE }])).toThrow(
        /CKR_ATTRIBUTE_SENSITIVE/,
      );
      expect(() => p.C_SetAttributeValue(s, key, [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }])).toThrow(
        /CKR_/,
      );
      const wrapping = token.findObject(p, s, pkcs11js.CKO_SECRET_KEY, 'wrapping-attempt');
      expect(() =>
        p.C_WrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, wrapping, key, Buffer.alloc(512)),
      ).toThrow(/CKR_/);
    });
  });

  it('refuses a second key under a label in use, and will not sign when one was planted beside it', async () => {
    expect(() => generateSecp256k1KeyPair(token, 'signer')).toThrow(/already exists/);
    // Someone with write access to the token adds a key under a signer's label (bypassing the check
    // above): the service must refuse to choose between them, not sign with whichever comes first.
    generateSecp256k1KeyPair(token, 'planted-original');
    const account = await ethereumAccount(pkcs11Signer(token, 'planted-original'));
    token.run((p, s) =>
      p.C_GenerateKeyPair(
        s,
        { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
        [
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_LABEL, value: 'planted-original' },
          { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06052b8104000a', 'hex') },
        ],
        [
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_LABEL, value: 'planted-original' },
          { type: pkcs11js.CKA_SIGN, value: true },
        ],
      ),
    );
    await expect(account.signMessage({ message: 'after the plant' })).rejects.toThrow(
      'hsm: more than one private key labelled "planted-original" on token "hsm-unit"',
    );
    await expect(ethereumAccount(pkcs11Signer(token, 'planted-original'))).rejects.toThrow(
      /more than one public key/,
    );
  });

  it('reopens the session when the token dropped it, and signs', async () => {
    const account = await ethereumAccount(pkcs11Signer(token, 'signer'));
    // As a network HSM does when it reconnects: every session of this application on the slot ends.
    token.run((p, s) => p.C_CloseAllSessions(p.C_GetSessionInfo(s).slotID));
    const message = 'after the session was lost';
    const signature = await account.signMessage({ message });
    expect(await recoverMessageAddress({ message, signature })).toBe(account.address);
  });

  it('names the token or key it cannot use (a wrong PIN: test/chain-hsm.test.ts, in a process of its own)', async () => {
    expect(() =>
      openToken({ modulePath: softHsm.modulePath, tokenLabel: 'no-such-token', pin: softHsm.pin }),
    ).toThrow('hsm: no token labelled "no-such-token"');
    await expect(ethereumAccount(pkcs11Signer(token, 'no-such-key'))).rejects.toThrow(
      'hsm: no public key labelled "no-such-key" on token "hsm-unit"',
    );
  });
});
