/**
 * Ethereum accounts whose secp256k1 key lives in an HSM: a viem custom account (`toAccount`) that
 * hashes what viem would sign, has the token sign the 32-byte hash (CKM_ECDSA), and turns the token's
 * (r, s) into an Ethereum signature — s normalised to the low half (EIP-2), the recovery bit found by
 * recovering both candidates and keeping the one that gives the key's own address.
 *
 * `EcdsaSigner` is the seam for production: a PKCS#11 key (`pkcs11Signer`) or a cloud KMS key (AWS
 * KMS `Sign` with ECC_SECG_P256K1 / MessageType DIGEST returns DER, which `toEthereumSignature`
 * reads too) — docs/operations.md "Keys in an HSM".
 */
import {
  type Address,
  type Hex,
  hashMessage,
  hashTypedData,
  keccak256,
  type LocalAccount,
  recoverAddress,
  type Signature,
  serializeSignature,
  serializeTransaction,
} from 'viem';
import { publicKeyToAddress, toAccount } from 'viem/accounts';
import { HsmError, pkcs11js, SECP256K1_EC_PARAMS, type Token } from './pkcs11.ts';

/** Signs 32-byte digests with one secp256k1 key it never reveals. */
export interface EcdsaSigner {
  /** Where the key lives, for logs ("pkcs11:credana/settler"). Never secret. */
  readonly keyId: string;
  /** The uncompressed public key: 0x04 ‖ X ‖ Y (65 bytes). */
  publicKey(): Promise<Uint8Array>;
  /** An ECDSA signature of `digest` (no hashing by the signer): raw r ‖ s (64 bytes) or DER. */
  signDigest(digest: Uint8Array): Promise<Uint8Array>;
}

/** The order n of secp256k1's group. */
export const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const HALF_N = SECP256K1_N >> 1n;

const toBigint = (bytes: Uint8Array): bigint =>
  bytes.length === 0 ? 0n : BigInt(`0x${Buffer.from(bytes).toString('hex')}`);

/** (r, s) from a raw r ‖ s signature or a DER `SEQUENCE { INTEGER r, INTEGER s }`. */
export function ecdsaComponents(signature: Uint8Array): { r: bigint; s: bigint } {
  if (signature.length === 64) {
    return { r: toBigint(signature.subarray(0, 32)), s: toBigint(signature.subarray(32)) };
  }
  // DER: 0x30 len 0x02 rlen r 0x02 slen s (short-form lengths: an ECDSA-256 signature is < 128 bytes).
  const fail = () => new HsmError('hsm_unavailable', 'hsm: the token returned a malformed ECDSA signature');
  if (signature[0] !== 0x30 || signature[1] !== signature.length - 2) throw fail();
  const integer = (at: number): [bigint, number] => {
    const length = signature[at + 1];
    if (signature[at] !== 0x02 || length === undefined || length === 0 || length > 33) throw fail();
    const end = at + 2 + length;
    if (end > signature.length) throw fail();
    return [toBigint(signature.subarray(at + 2, end)), end];
  };
  const [r, next] = integer(2);
  const [s, end] = integer(next);
  if (end !== signature.length) throw fail();
  return { r, s };
}

/**
 * The Ethereum signature of `hash` by the key whose address is `address`, from the signer's (r, s):
 * s in the low half (a high s is replaced by n − s, the same signature for ECDSA, the only one
 * Ethereum accepts), and the yParity under which `hash` recovers to `address`.
 */
export async function toEthereumSignature(hash: Hex, raw: Uint8Array, address: Address): Promise<Signature> {
  const { r, s: sAny } = ecdsaComponents(raw);
  if (r <= 0n || r >= SECP256K1_N || sAny <= 0n || sAny >= SECP256K1_N) {
    throw new HsmError('hsm_unavailable', 'hsm: the token returned an ECDSA signature out of range');
  }
  const s = sAny > HALF_N ? SECP256K1_N - sAny : sAny;
  const hex = (value: bigint) => `0x${value.toString(16).padStart(64, '0')}` as Hex;
  for (const yParity of [0, 1] as const) {
    const signature = { r: hex(r), s: hex(s), yParity };
    const recovered = await recoverAddress({ hash, signature });
    if (recovered.toLowerCase() === address.toLowerCase()) return { ...signature, v: BigInt(27 + yParity) };
  }
  throw new HsmError('hsm_unavailable', `hsm: the signature does not recover to ${address}`);
}

/** The 65-byte uncompressed point from CKA_EC_POINT (a DER OCTET STRING around it, or bare). */
export function uncompressedPoint(ecPoint: Uint8Array): Uint8Array {
  if (ecPoint.length === 65 && ecPoint[0] === 0x04) return ecPoint;
  if (ecPoint.length === 67 && ecPoint[0] === 0x04 && ecPoint[1] === 65 && ecPoint[2] === 0x04) {
    return ecPoint.subarray(2);
  }
  throw new HsmError('hsm_config', 'hsm: the public key is not an uncompressed secp256k1 point');
}

/** A PKCS#11 secp256k1 key pair labelled `label` on `token` (both halves carry the label). */
export function pkcs11Signer(token: Token, label: string): EcdsaSigner {
  return {
    keyId: `pkcs11:${token.tokenLabel}/${label}`,
    async publicKey() {
      return token.run((p, s) => {
        const handle = token.findObject(p, s, pkcs11js.CKO_PUBLIC_KEY, label);
        const [params, point] = p.C_GetAttributeValue(s, handle, [
          { type: pkcs11js.CKA_EC_PARAMS },
          { type: pkcs11js.CKA_EC_POINT },
        ]);
        if (params === undefined || point === undefined || !params.value.equals(SECP256K1_EC_PARAMS)) {
          throw new HsmError('hsm_config', `hsm: key "${label}" is not a secp256k1 key`);
        }
        return new Uint8Array(uncompressedPoint(point.value));
      });
    },
    async signDigest(digest) {
      if (digest.length !== 32) throw new Error('signDigest needs a 32-byte digest');
      return token.run((p, s) => {
        const handle = token.findObject(p, s, pkcs11js.CKO_PRIVATE_KEY, label);
        p.C_SignInit(s, { mechanism: pkcs11js.CKM_ECDSA }, handle);
        return new Uint8Array(p.C_Sign(s, Buffer.from(digest), Buffer.alloc(128)));
      });
    },
  };
}

/**
 * A viem account that signs through `signer`: transactions (every type viem serialises), messages
 * (EIP-191) and typed data (EIP-712). Its address is derived from the signer's public key.
 *
 * @example
 *   const account = await ethereumAccount(pkcs11Signer(token, 'settler'));
 *   await client.sendRawTransaction({ serializedTransaction: await account.signTransaction(tx) });
 */
export async function ethereumAccount(signer: EcdsaSigner): Promise<LocalAccount> {
  const address = publicKeyToAddress(`0x${Buffer.from(await signer.publicKey()).toString('hex')}`);
  const sign = async (hash: Hex): Promise<Signature> =>
    toEthereumSignature(hash, await signer.signDigest(Buffer.from(hash.slice(2), 'hex')), address);
  return toAccount({
    address,
    async sign({ hash }) {
      return serializeSignature(await sign(hash));
    },
    async signMessage({ message }) {
      return serializeSignature(await sign(hashMessage(message)));
    },
    async signTypedData(typedData) {
      return serializeSignature(await sign(hashTypedData(typedData)));
    },
    async signTransaction(transaction, options) {
      const serializer = options?.serializer ?? serializeTransaction;
      // As viem's own signTransaction: a blob transaction signs its body without the sidecars.
      const signable = transaction.type === 'eip4844' ? { ...transaction, sidecars: false } : transaction;
      const signature = await sign(keccak256(await serializer(signable)));
      return serializer(transaction, signature);
    },
  });
}
