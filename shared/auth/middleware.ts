/**
 * Hono middleware for endpoints a signed-in user calls: verifies the Supabase access token of
 * `Authorization: Bearer …` and exposes the caller as `c.get('supabaseUser')`. A refused token is
 * answered 401 with the failure code; an unreachable JWKS endpoint 503 (the caller may retry).
 *
 * @example
 * app.use('/me/*', requireSupabaseUser(verifier));
 * app.get('/me/summary', (c) => c.json({ userId: c.get('supabaseUser').userId }));
 */
import type { MiddlewareHandler } from 'hono';
import { bearerToken, type SupabaseUser, type TokenVerifier } from './verify-token.ts';

export type SupabaseAuthEnv = { Variables: { supabaseUser: SupabaseUser } };

export function requireSupabaseUser(verifier: TokenVerifier): MiddlewareHandler<SupabaseAuthEnv> {
  return async (c, next) => {
    const result = await verifier.verify(bearerToken(c.req.header('authorization')));
    if (!result.ok) {
      const status = result.code === 'keys_unavailable' ? 503 : 401;
      if (status === 401) c.header('WWW-Authenticate', `Bearer error="invalid_token"`);
      return c.json({ error: result.code }, status);
    }
    c.set('supabaseUser', result.user);
    await next();
    return undefined;
  };
}
