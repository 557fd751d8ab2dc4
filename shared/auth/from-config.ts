/**
 * The token verifier the configuration asks for, or null when it names none (then no user-facing
 * route is mounted). Keys: SUPABASE_JWKS_URL (the project's asymmetric keys) and/or the legacy
 * SUPABASE_JWT_SECRET; audience SUPABASE_JWT_AUDIENCE; issuer `<SUPABASE_URL>/auth/v1`. A public
 * secret in SUPABASE_JWT_SECRET never gets this far outside local development: `loadConfig` refuses it.
 */
import type { Config } from '../config.ts';
import { createTokenVerifier, type TokenVerifier } from './verify-token.ts';

export type AuthConfig = Pick<
  Config,
  'SUPABASE_URL' | 'SUPABASE_JWKS_URL' | 'SUPABASE_JWT_SECRET' | 'SUPABASE_JWT_AUDIENCE'
>;

/** Supabase Auth's issuer for a project URL (`iss` of its access tokens). */
export function supabaseIssuer(supabaseUrl: string): string {
  return `${supabaseUrl.replace(/\/+$/, '')}/auth/v1`;
}

export function tokenVerifierFromConfig(config: AuthConfig): TokenVerifier | null {
  if (config.SUPABASE_JWKS_URL === undefined && config.SUPABASE_JWT_SECRET === undefined) return null;
  return createTokenVerifier({
    audience: config.SUPABASE_JWT_AUDIENCE,
    issuer: supabaseIssuer(config.SUPABASE_URL),
    ...(config.SUPABASE_JWKS_URL === undefined ? {} : { jwksUrl: config.SUPABASE_JWKS_URL }),
    ...(config.SUPABASE_JWT_SECRET === undefined ? {} : { legacySecret: config.SUPABASE_JWT_SECRET }),
  });
}
