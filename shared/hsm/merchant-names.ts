/**
 * Sealed merchant names (`authorizations.merchant_name_sealed`, docs/operations.md "Encryption at
 * rest"): the one place that names their context and decides what a process does when it cannot seal
 * or open right now.
 *
 * A swipe never waits on the HSM. Sealing happens in the ledger writer only (never in the hot path:
 * its Postgres fallback queues the plaintext in `merchant_names_unsealed`, in the transaction of the
 * authorization row). The writer unwraps its data key once and keeps it; while it holds none (the token
 * or the database did not answer) `seal` answers null at once and for `retryAfterMs` does not ask
 * again, and the writer queues the plaintext the same way — the money and the row are written either
 * way, and the writer seals the queue when it holds a key again (ledger-writer/seal-queue.ts).
 * Readers (the Supabase projection, `npm run ops -- show-user`) get null for a name they cannot open now
 * and show it as missing; the projection's periodic sweep writes it once it opens.
 */
import type postgres from 'postgres';
import type { Config } from '../config.ts';
import {
  createEnvelope,
  type Envelope,
  EnvelopeError,
  type KeyWrapper,
  pkcs11KeyWrapper,
} from './envelope.ts';
import { tokenFromConfig } from './index.ts';
import { HsmError, type Token } from './pkcs11.ts';

/** The context a merchant name is sealed for: a value copied to another authorization does not open. */
export const merchantNameContext = (authorizationId: string) =>
  `authorizations.merchant_name:${authorizationId}`;

/** How long a process that could not reach its data key goes without asking again. */
export const KEY_RETRY_AFTER_MS_DEFAULT = 10_000;

export interface MerchantNames {
  /** The name sealed for `authorizationId`; null when this process holds no data key right now. */
  seal(authorizationId: string, name: string): Promise<Buffer | null>;
  /**
   * The name, or null when it does not open: no data key right now (asked again after the back-off),
   * or a value sealed for another authorization or altered (`onError` is told; never retried).
   */
  open(authorizationId: string, sealed: Buffer): Promise<string | null>;
}

export interface MerchantNamesOptions {
  envelope: Envelope;
  retryAfterMs?: number;
  nowMs?: () => number;
  /** Told of every failure, with whether it is the key (`unavailable`) or the value (`unreadable`). */
  onError?: (kind: 'unavailable' | 'unreadable', error: unknown) => void;
}

/** A value this process will never open (sealed elsewhere or altered), as opposed to a key it lacks now. */
function isUnreadableValue(error: unknown): boolean {
  return (
    error instanceof EnvelopeError && error.problem !== 'no_data_key' && error.problem !== 'no_data_key_yet'
  );
}

/**
 * @example
 *   const names = createMerchantNames({ envelope: createEnvelope({ sql, wrapper: pkcs11KeyWrapper(token) }) });
 *   const sealed = await names.seal('iauth_123', 'ACME GROCER'); // null: queue the plaintext instead
 */
export function createMerchantNames(options: MerchantNamesOptions): MerchantNames {
  const now = options.nowMs ?? Date.now;
  const retryAfterMs = options.retryAfterMs ?? KEY_RETRY_AFTER_MS_DEFAULT;
  let unavailableUntilMs = 0;
  const unavailable = (error: unknown) => {
    unavailableUntilMs = now() + retryAfterMs;
    options.onError?.('unavailable', error);
  };
  return {
    async seal(authorizationId, name) {
      if (now() < unavailableUntilMs) return null;
      try {
        return await options.envelope.seal(name, merchantNameContext(authorizationId));
      } catch (error) {
        unavailable(error);
        return null;
      }
    },
    async open(authorizationId, sealed) {
      try {
        // A value whose key this process already holds opens even while the token is away.
        if (now() < unavailableUntilMs && !options.envelope.holdsKeyOf(sealed)) return null;
        return await options.envelope.open(sealed, merchantNameContext(authorizationId));
      } catch (error) {
        if (isUnreadableValue(error)) {
          options.onError?.('unreadable', error);
          return null;
        }
        unavailable(error);
        return null;
      }
    },
  };
}

/**
 * Whether `error` is a deploy error that waiting cannot fix: the token refusing the PIN, no such key
 * label, no PKCS#11 library at the path, no data key yet. A token not found is not one: a network HSM
 * that is down can look like that.
 */
export function isKeyConfigError(error: unknown): boolean {
  return (
    (error instanceof HsmError && error.code === 'hsm_config' && error.problem !== 'token_not_found') ||
    (error instanceof EnvelopeError && error.problem === 'no_data_key_yet')
  );
}

/**
 * A key wrapper on the token the config names, opened on first use and again after it failed: a
 * process started while the token was unreachable begins sealing once it answers, without a restart.
 */
export function lazyTokenWrapper(config: Config): KeyWrapper & { close(): void } {
  let token: Token | null = null;
  const wrapper = (): KeyWrapper => {
    token ??= tokenFromConfig(config);
    if (token === null)
      throw new HsmError('hsm_config', 'hsm: PKCS11_MODULE and PKCS11_TOKEN_LABEL are not set');
    return pkcs11KeyWrapper(token);
  };
  const using = <T>(use: (w: KeyWrapper) => T): T => {
    try {
      return use(wrapper());
    } catch (error) {
      if (error instanceof HsmError && error.code === 'hsm_unavailable') {
        token?.close();
        token = null;
      }
      throw error;
    }
  };
  return {
    wrap: (label, key, aad) => using((w) => w.wrap(label, key, aad)),
    unwrap: (label, wrapped, aad) => using((w) => w.unwrap(label, wrapped, aad)),
    close() {
      token?.close();
      token = null;
    },
  };
}

export interface ConfiguredMerchantNames {
  names: MerchantNames;
  envelope: Envelope;
  close(): void;
}

/** Merchant names through the token the config names; null when it names none (PKCS11_MODULE unset). */
export function merchantNamesFromConfig(
  config: Config,
  sql: postgres.Sql,
  onError?: MerchantNamesOptions['onError'],
): ConfiguredMerchantNames | null {
  if (config.PKCS11_MODULE === undefined || config.PKCS11_TOKEN_LABEL === undefined) return null;
  const wrapper = lazyTokenWrapper(config);
  const envelope = createEnvelope({
    sql,
    wrapper,
    onRefreshError: (error) => onError?.('unavailable', error),
  });
  return {
    envelope,
    names: createMerchantNames({ envelope, ...(onError === undefined ? {} : { onError }) }),
    close() {
      envelope.forget();
      wrapper.close();
    },
  };
}

export type SealingStart =
  | { ok: true; sealing: ConfiguredMerchantNames | null; warning: string | null }
  | { ok: false; line: string };

/**
 * What a process that seals (the ledger writer) does at start: unwraps the newest data key now, so
 * sealing needs no token call until the next data key. In production it refuses (`ok: false`, exit 78)
 * only what waiting cannot fix — no token configured (the names would wait unsealed for ever) or
 * `isKeyConfigError`; anything else (the token or the database not answering) starts it with a
 * warning, and names wait unsealed until the key is reached.
 */
export async function startMerchantNameSealing(
  config: Config,
  sql: postgres.Sql,
  onError?: MerchantNamesOptions['onError'],
): Promise<SealingStart> {
  const production = config.NODE_ENV === 'production';
  const sealing = merchantNamesFromConfig(config, sql, onError);
  if (sealing === null) {
    return production
      ? {
          ok: false,
          line: 'PKCS11_MODULE and PKCS11_TOKEN_LABEL are required to seal merchant names (docs/operations.md "Encryption at rest")',
        }
      : {
          ok: true,
          sealing: null,
          warning: 'no PKCS11 token configured: merchant names wait unsealed (development only)',
        };
  }
  try {
    await sealing.envelope.seal('', 'start');
    return { ok: true, sealing, warning: null };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (production && isKeyConfigError(error)) {
      sealing.close();
      return { ok: false, line: message };
    }
    return {
      ok: true,
      sealing,
      warning: `no data key now (${message}): merchant names wait unsealed until there is`,
    };
  }
}
