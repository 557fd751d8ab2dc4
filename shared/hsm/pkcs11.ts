/**
 * A PKCS#11 token, by label, with a logged-in session: SoftHSM2 in development and tests, a network
 * HSM's PKCS#11 library in production (docs/operations.md "Keys in an HSM"). Keys are found by label
 * and used inside the token; nothing here can read a private or secret key's value, and the keys this
 * module creates are made so that the token refuses to give it (CKA_SENSITIVE, not CKA_EXTRACTABLE).
 *
 * Calls are synchronous (pkcs11js): an operation's Init and its one-shot call run back to back on the
 * one session, so concurrent callers in this process cannot interleave inside a PKCS#11 operation.
 * C_Sign took 3.6 ms on SoftHSM (500 signatures, this 2-core machine at load average ~16, so noisy),
 * and a whole Ethereum signature 24 ms (the recovery-bit search runs secp256k1 recovery in JavaScript):
 * the signers sign a few times a minute, never on the hot path, so the event loop pauses are harmless.
 */
import pkcs11js from 'pkcs11js';

/** What a caller should do: fix the configuration (token, PIN, key label) or retry later. */
export type HsmErrorCode = 'hsm_config' | 'hsm_unavailable';

/** An HSM failure. The message names the token, key label and PKCS#11 return code, never the PIN. */
export class HsmError extends Error {
  constructor(
    readonly code: HsmErrorCode,
    message: string,
    /** `token_not_found`: no token has the label — a typo, or a network HSM that is down. */
    readonly problem: 'token_not_found' | null = null,
  ) {
    super(message);
  }
}

export interface TokenOptions {
  /** The PKCS#11 library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so). */
  modulePath: string;
  tokenLabel: string;
  pin: string;
}

export type Handle = Buffer;
export type Pkcs11 = pkcs11js.PKCS11;

/** A logged-in session on one token. */
export interface Token {
  readonly tokenLabel: string;
  /**
   * Runs `use` with the session. When the token dropped the session (a network HSM's reconnect, a
   * token re-inserted: CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN,
   * CKR_DEVICE_REMOVED…), opens and logs in a new one and runs `use` once more.
   */
  run<T>(use: (pkcs11: Pkcs11, session: Handle) => T): T;
  /** The object of `objectClass` labelled `label`; `hsm_config` when there is none or more than one. */
  findObject(pkcs11: Pkcs11, session: Handle, objectClass: number, label: string): Handle;
  close(): void;
}

// One loaded library per path for the whole process: C_Initialize is process-wide for a library, and
// a second load of the same library shares it. Counted, so the last close finalises it.
const libraries = new Map<string, { pkcs11: Pkcs11; users: number }>();

/** The PKCS#11 return-code name of an error ("CKR_PIN_INCORRECT"), or its message's first line. */
export function pkcs11Reason(error: unknown): string {
  if (error instanceof pkcs11js.Pkcs11Error) return error.message;
  return error instanceof Error ? (error.message.split('\n')[0] ?? 'error') : String(error);
}

const code = (error: unknown): number | null => (error instanceof pkcs11js.Pkcs11Error ? error.code : null);

/** Return codes after which a new session may succeed. */
const SESSION_LOST = new Set([
  pkcs11js.CKR_SESSION_HANDLE_INVALID,
  pkcs11js.CKR_SESSION_CLOSED,
  pkcs11js.CKR_USER_NOT_LOGGED_IN,
  pkcs11js.CKR_DEVICE_REMOVED,
  pkcs11js.CKR_TOKEN_NOT_PRESENT,
  pkcs11js.CKR_DEVICE_ERROR,
]);

function loadLibrary(modulePath: string): Pkcs11 {
  const loaded = libraries.get(modulePath);
  if (loaded !== undefined) {
    loaded.users += 1;
    return loaded.pkcs11;
  }
  const pkcs11 = new pkcs11js.PKCS11();
  try {
    pkcs11.load(modulePath);
  } catch (error) {
    throw new HsmError(
      'hsm_config',
      `hsm: cannot load the PKCS#11 module ${modulePath}: ${pkcs11Reason(error)}`,
    );
  }
  try {
    pkcs11.C_Initialize();
  } catch (error) {
    if (code(error) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      throw new HsmError('hsm_unavailable', `hsm: C_Initialize failed: ${pkcs11Reason(error)}`);
    }
  }
  libraries.set(modulePath, { pkcs11, users: 1 });
  return pkcs11;
}

function releaseLibrary(modulePath: string): void {
  const loaded = libraries.get(modulePath);
  if (loaded === undefined) return;
  loaded.users -= 1;
  if (loaded.users > 0) return;
  libraries.delete(modulePath);
  try {
    loaded.pkcs11.C_Finalize();
  } catch {
    // Finalising is best effort: the process is letting go of the library.
  }
}

function findSlot(pkcs11: Pkcs11, tokenLabel: string): Handle {
  const matches = pkcs11
    .C_GetSlotList(true)
    .filter((slot) => pkcs11.C_GetTokenInfo(slot).label.trim() === tokenLabel);
  const [slot] = matches;
  if (slot === undefined || matches.length > 1) {
    throw new HsmError(
      'hsm_config',
      `hsm: ${matches.length === 0 ? 'no' : 'more than one'} token labelled "${tokenLabel}"`,
      matches.length === 0 ? 'token_not_found' : null,
    );
  }
  return slot;
}

/**
 * Opens a read-write session on the token labelled `tokenLabel` and logs in as the user.
 *
 * @example
 *   const token = openToken({ modulePath: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 'credana', pin });
 *   const account = await hsmAccount(token, 'settler');
 */
export function openToken(options: TokenOptions): Token {
  const pkcs11 = loadLibrary(options.modulePath);
  let session: Handle | null = null;
  const connect = (): Handle => {
    const slot = findSlot(pkcs11, options.tokenLabel);
    const opened = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      pkcs11.C_Login(opened, pkcs11js.CKU_USER, options.pin);
    } catch (error) {
      // Login is per application and token: another session of this process may have done it.
      if (code(error) !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) {
        pkcs11.C_CloseSession(opened);
        const reason = pkcs11Reason(error);
        const pinProblem = /PIN|LOCKED/.test(reason);
        throw new HsmError(
          pinProblem ? 'hsm_config' : 'hsm_unavailable',
          `hsm: login to token "${options.tokenLabel}" refused: ${reason}`,
        );
      }
    }
    return opened;
  };
  try {
    session = connect();
  } catch (error) {
    releaseLibrary(options.modulePath);
    if (error instanceof HsmError) throw error;
    throw new HsmError('hsm_unavailable', `hsm: token "${options.tokenLabel}": ${pkcs11Reason(error)}`);
  }
  let closed = false;
  return {
    tokenLabel: options.tokenLabel,
    run(use) {
      if (closed) throw new HsmError('hsm_unavailable', 'hsm: the token session is closed');
      try {
        if (session === null) session = connect();
        return use(pkcs11, session);
      } catch (error) {
        const returned = code(error);
        if (returned === null || !SESSION_LOST.has(returned)) throw wrap(error);
        session = null;
        try {
          session = connect();
        } catch (again) {
          throw wrap(again);
        }
        try {
          return use(pkcs11, session);
        } catch (again) {
          throw wrap(again);
        }
      }
    },
    findObject(p, s, objectClass, label) {
      p.C_FindObjectsInit(s, [
        { type: pkcs11js.CKA_CLASS, value: objectClass },
        { type: pkcs11js.CKA_LABEL, value: label },
      ]);
      let found: Handle[];
      try {
        found = p.C_FindObjects(s, 2);
      } finally {
        p.C_FindObjectsFinal(s);
      }
      const [handle] = found;
      if (handle === undefined || found.length > 1) {
        throw new HsmError(
          'hsm_config',
          `hsm: ${found.length === 0 ? 'no' : 'more than one'} ${className(objectClass)} labelled "${label}" on token "${options.tokenLabel}"`,
        );
      }
      return handle;
    },
    close() {
      if (closed) return;
      closed = true;
      if (session !== null) {
        try {
          pkcs11.C_CloseSession(session);
        } catch {
          // Already gone with the token.
        }
      }
      releaseLibrary(options.modulePath);
    },
  };
}

function wrap(error: unknown): Error {
  if (error instanceof HsmError) return error;
  const returned = code(error);
  if (returned !== null) {
    return new HsmError(
      SESSION_LOST.has(returned) ? 'hsm_unavailable' : 'hsm_config',
      `hsm: ${pkcs11Reason(error)}`,
    );
  }
  return error instanceof Error ? error : new Error(String(error));
}

function className(objectClass: number): string {
  if (objectClass === pkcs11js.CKO_PRIVATE_KEY) return 'private key';
  if (objectClass === pkcs11js.CKO_PUBLIC_KEY) return 'public key';
  if (objectClass === pkcs11js.CKO_SECRET_KEY) return 'secret key';
  return `object of class ${objectClass}`;
}

/** DER of the secp256k1 curve's OID (1.3.132.0.10), the CKA_EC_PARAMS of an Ethereum key. */
export const SECP256K1_EC_PARAMS = Buffer.from('06052b8104000a', 'hex');

/**
 * Generates a secp256k1 key pair inside the token, labelled `label`: the private key is sensitive
 * and not extractable, so the token signs with it and never gives it out. Refuses a label in use.
 */
export function generateSecp256k1KeyPair(token: Token, label: string): void {
  token.run((p, s) => {
    refuseLabelInUse(token, p, s, pkcs11js.CKO_PRIVATE_KEY, label);
    p.C_GenerateKeyPair(
      s,
      { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      [
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_LABEL, value: label },
        { type: pkcs11js.CKA_EC_PARAMS, value: SECP256K1_EC_PARAMS },
        { type: pkcs11js.CKA_VERIFY, value: true },
      ],
      [
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_LABEL, value: label },
        { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_SIGN, value: true },
        { type: pkcs11js.CKA_SENSITIVE, value: true },
        { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      ],
    );
  });
}

/**
 * Generates an AES-256 key inside the token, labelled `label`, that only encrypts and decrypts
 * (the key-encryption key of docs/operations.md "Encryption at rest"): sensitive, not extractable.
 */
export function generateAesKey(token: Token, label: string): void {
  token.run((p, s) => {
    refuseLabelInUse(token, p, s, pkcs11js.CKO_SECRET_KEY, label);
    p.C_GenerateKey(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    ]);
  });
}

function refuseLabelInUse(token: Token, p: Pkcs11, s: Handle, objectClass: number, label: string): void {
  p.C_FindObjectsInit(s, [
    { type: pkcs11js.CKA_CLASS, value: objectClass },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);
  let found: Handle[];
  try {
    found = p.C_FindObjects(s, 1);
  } finally {
    p.C_FindObjectsFinal(s);
  }
  if (found.length > 0) {
    throw new HsmError(
      'hsm_config',
      `hsm: a ${className(objectClass)} labelled "${label}" already exists on token "${token.tokenLabel}"`,
    );
  }
}

export { pkcs11js };
