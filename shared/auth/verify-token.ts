/**
 * Server-side verification of Supabase access tokens, for every endpoint a signed-in user calls.
 *
 * Supabase signs access tokens either with the project's asymmetric signing keys (ES256 / RS256,
 * public keys at `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`) or, on projects not yet migrated,
 * with the legacy shared secret (HS256, SUPABASE_JWT_SECRET). The token's own header picks the path,
 * but only from our allow-list: `alg: none` and any algorithm we did not configure are refused
 * before any key is looked at, so a token cannot choose a weaker check (e.g. an HS256 token "signed"
 * with our public key).
 *
 * Failures are values with a stable `code`; `keys_unavailable` is the only retryable one (the JWKS
 * endpoint could not be reached): answer 503, not 401.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import { z } from 'zod';

/** Algorithms Supabase's asymmetric signing keys use. */
export const ASYMMETRIC_ALGORITHMS = ['ES256', 'RS256', 'EdDSA'] as const;
const LEGACY_ALGORITHM = 'HS256';
/** A Supabase access token is well under 2 KB; refuse anything absurd before parsing it. */
export const TOKEN_LENGTH_MAX = 8_192;

export interface TokenVerifierOptions {
  /** Expected `aud` (SUPABASE_JWT_AUDIENCE, 'authenticated' on Supabase). */
  audience: string;
  /** Expected `iss`, `<SUPABASE_URL>/auth/v1`; not checked when absent. */
  issuer?: string;
  /** The project's JWKS endpoint, fetched and cached by jose. */
  jwksUrl?: string | URL;
  /** A fixed key set instead of (or before migrating to) the endpoint. */
  jwks?: JSONWebKeySet;
  /** The legacy shared secret (SUPABASE_JWT_SECRET); without it HS256 tokens are refused. */
  legacySecret?: string;
  /** Tolerated clock skew for `exp` / `nbf` / `iat`. */
  clockToleranceS?: number;
  /** Time limit of one JWKS fetch. */
  jwksTimeoutMs?: number;
  /** How long fetched keys are trusted before a refetch. */
  jwksCacheMaxAgeMs?: number;
}

export type TokenFailureCode =
  | 'token_missing'
  | 'token_malformed'
  | 'algorithm_refused'
  | 'token_expired'
  | 'audience_mismatch'
  | 'issuer_mismatch'
  | 'signature_invalid'
  | 'key_unknown'
  | 'claims_invalid'
  | 'keys_unavailable';

/** What an endpoint learns about its caller. */
export interface SupabaseUser {
  userId: string;
  email: string | null;
  /** `app_metadata.role === 'support'` (set only with the service role key). */
  isSupport: boolean;
  sessionId: string | null;
  /** Authenticator assurance level: 'aal1', or 'aal2' after MFA. */
  aal: string | null;
  expiresAtS: number;
}

export type VerifyResult = { ok: true; user: SupabaseUser } | { ok: false; code: TokenFailureCode };

const claimsSchema = z.object({
  sub: z.uuid(),
  role: z.literal('authenticated'),
  exp: z.number().int(),
  email: z.string().max(320).optional(),
  session_id: z.string().max(128).optional(),
  aal: z.string().max(16).optional(),
  app_metadata: z.record(z.string(), z.unknown()).optional(),
});

export interface TokenVerifier {
  verify(token: string | null | undefined): Promise<VerifyResult>;
}

export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const asymmetricKeys: JWTVerifyGetKey | null =
    options.jwks !== undefined
      ? createLocalJWKSet(options.jwks)
      : options.jwksUrl !== undefined
        ? createRemoteJWKSet(new URL(options.jwksUrl), {
            timeoutDuration: options.jwksTimeoutMs ?? 3_000,
            cacheMaxAge: options.jwksCacheMaxAgeMs ?? 600_000,
            cooldownDuration: 30_000,
          })
        : null;
  const legacyKey =
    options.legacySecret === undefined ? null : new TextEncoder().encode(options.legacySecret);
  if (asymmetricKeys === null && legacyKey === null) {
    throw new Error('token verifier: configure a JWKS (jwksUrl or jwks) or the legacy secret');
  }
  const common = {
    audience: options.audience,
    ...(options.issuer === undefined ? {} : { issuer: options.issuer }),
    clockTolerance: options.clockToleranceS ?? 5,
    requiredClaims: ['exp', 'sub'],
  };

  async function verify(token: string | null | undefined): Promise<VerifyResult> {
    if (token === null || token === undefined || token === '') return { ok: false, code: 'token_missing' };
    if (token.length > TOKEN_LENGTH_MAX) return { ok: false, code: 'token_malformed' };
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      // decodeProtectedHeader throws only for a token it cannot decode.
      return { ok: false, code: 'token_malformed' };
    }
    let payload: JWTPayload;
    try {
      if (alg === LEGACY_ALGORITHM && legacyKey !== null) {
        ({ payload } = await jwtVerify(token, legacyKey, { ...common, algorithms: [LEGACY_ALGORITHM] }));
      } else if (
        asymmetricKeys !== null &&
        typeof alg === 'string' &&
        (ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg)
      ) {
        ({ payload } = await jwtVerify(token, asymmetricKeys, {
          ...common,
          algorithms: [...ASYMMETRIC_ALGORITHMS],
        }));
      } else {
        return { ok: false, code: 'algorithm_refused' };
      }
    } catch (error) {
      return { ok: false, code: failureCode(error) };
    }
    const claims = claimsSchema.safeParse(payload);
    if (!claims.success) return { ok: false, code: 'claims_invalid' };
    const c = claims.data;
    return {
      ok: true,
      user: {
        userId: c.sub,
        email: c.email ?? null,
        isSupport: c.app_metadata?.['role'] === 'support',
        sessionId: c.session_id ?? null,
        aal: c.aal ?? null,
        expiresAtS: c.exp,
      },
    };
  }

  return { verify };
}

/** Maps jose's error codes (stable strings) to ours. */
function failureCode(error: unknown): TokenFailureCode {
  const code = (error as { code?: unknown }).code;
  const claim = (error as { claim?: unknown }).claim;
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'token_expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return claim === 'aud' ? 'audience_mismatch' : claim === 'iss' ? 'issuer_mismatch' : 'claims_invalid';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'signature_invalid';
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'key_unknown';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'algorithm_refused';
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      return 'keys_unavailable';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JWT_CLAIM_INVALID':
      return 'token_malformed';
    default:
      // A failed JWKS fetch surfaces as a plain network error (fetch's TypeError).
      return error instanceof TypeError ? 'keys_unavailable' : 'token_malformed';
  }
}

/** `Authorization: Bearer <token>` → the token, or null. */
export function bearerToken(header: string | null | undefined): string | null {
  if (header === null || header === undefined) return null;
  const match = /^Bearer ([A-Za-z0-9_\-.]+)$/.exec(header.trim());
  return match?.[1] ?? null;
}
