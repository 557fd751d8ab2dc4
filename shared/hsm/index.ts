/**
 * Keys in an HSM: the PKCS#11 token (pkcs11.ts), Ethereum accounts whose key stays in it
 * (ethereum.ts), and the one place a service turns its configuration into a chain signer
 * (`signerFromConfig`): a key in the token named by `<ROLE>_KEY_LABEL`, or — in development and test
 * only, the config refuses it in production — a raw `<ROLE>_PRIVATE_KEY`.
 */
import type { LocalAccount } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { CHAIN_SIGNERS, type ChainSignerRole, type Config } from '../config.ts';
import { ethereumAccount, pkcs11Signer } from './ethereum.ts';
import { HsmError, openToken, type Token } from './pkcs11.ts';

export {
  type EcdsaSigner,
  ecdsaComponents,
  ethereumAccount,
  pkcs11Signer,
  SECP256K1_N,
  toEthereumSignature,
} from './ethereum.ts';
export {
  generateAesKey,
  generateSecp256k1KeyPair,
  HsmError,
  type HsmErrorCode,
  openToken,
  pkcs11Reason,
  type Token,
  type TokenOptions,
} from './pkcs11.ts';

export interface ChainSigner {
  account: LocalAccount;
  /** Where the key is, for the start-up log: `pkcs11:<token>/<label>` or `env:<VARIABLE>`. */
  keyId: string;
  close(): void;
}

/** The token the config names (PKCS11_MODULE, PKCS11_TOKEN_LABEL, PKCS11_PIN), or null when unset. */
export function tokenFromConfig(config: Config): Token | null {
  if (config.PKCS11_MODULE === undefined || config.PKCS11_TOKEN_LABEL === undefined) return null;
  if (config.PKCS11_PIN === undefined) throw new HsmError('hsm_config', 'hsm: PKCS11_PIN is not set');
  return openToken({
    modulePath: config.PKCS11_MODULE,
    tokenLabel: config.PKCS11_TOKEN_LABEL,
    pin: config.PKCS11_PIN,
  });
}

/**
 * The chain signer of `role` as the config names it, or null when it names none. Throws `HsmError`
 * when the token or the key cannot be used (its message names them, never the PIN).
 */
export async function signerFromConfig(config: Config, role: ChainSignerRole): Promise<ChainSigner | null> {
  const names = CHAIN_SIGNERS[role];
  const label = config[names.keyLabel];
  if (label !== undefined) {
    const token = tokenFromConfig(config);
    if (token === null)
      throw new HsmError('hsm_config', `hsm: ${names.keyLabel} needs PKCS11_MODULE and PKCS11_TOKEN_LABEL`);
    try {
      const signer = pkcs11Signer(token, label);
      return { account: await ethereumAccount(signer), keyId: signer.keyId, close: () => token.close() };
    } catch (error) {
      token.close();
      throw error;
    }
  }
  const key = config[names.privateKey];
  if (key === undefined) return null;
  return {
    account: privateKeyToAccount(key as `0x${string}`),
    keyId: `env:${names.privateKey}`,
    close: () => {},
  };
}

/**
 * For service entry points: the signer of `role`, or one stderr line and exit — 78 (EX_CONFIG) when
 * the config names no key or the token refuses it (wrong PIN, no such token or key), 69
 * (EX_UNAVAILABLE) when the token cannot be reached.
 */
export async function signerOrExit(
  config: Config,
  role: ChainSignerRole,
  service: string,
): Promise<ChainSigner> {
  const names = CHAIN_SIGNERS[role];
  let signer: ChainSigner | null;
  try {
    signer = await signerFromConfig(config, role);
  } catch (error) {
    if (!(error instanceof HsmError)) throw error;
    process.stderr.write(`${service}: ${error.message}\n`);
    process.exit(error.code === 'hsm_config' ? 78 : 69);
  }
  if (signer === null) {
    process.stderr.write(`${service}: ${names.privateKey} or ${names.keyLabel} is required\n`);
    process.exit(78);
  }
  return signer;
}
