// Proves server-side token verification: valid Supabase tokens pass (ES256 via a JWKS served over real HTTP, and the legacy HS256 secret); expired, wrong-audience, wrong-issuer, wrong-key, alg none, algorithm-confusion and non-user tokens are refused with a stable code; the Hono middleware maps them to 401/503.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { exportJWK, generateKeyPair, type JWK, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireSupabaseUser, type SupabaseAuthEnv } from './middleware.ts';
import {
  bearerToken,
  createTokenVerifier,
  type TokenFailureCode,
  type TokenVerifier,
} from './verify-token.ts';

type Key = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

const ISSUER = 'http://127.0.0.1:54321/auth/v1';
const AUDIENCE = 'authenticated';
const SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';
const USER = '4b5c1f0e-9a53-4c6e-8f0a-2d3b4c5d6e7f';

let server: Server;
let jwksUrl: string;
let signingKey: Key;
let publicJwk: JWK;
let otherKey: Key;
let verifier: TokenVerifier;

function claims(extra: Record<string, unknown> = {}) {
  return {
    sub: USER,
    role: 'authenticated',
    email: 'alice@example.test',
    session_id: 'sess_1',
    aal: 'aal1',
    app_metadata: { provider: 'email' },
    ...extra,
  };
}

async function es256(
  options: {
    key?: Key;
    kid?: string;
    aud?: string;
    iss?: string;
    expS?: number;
    extra?: Record<string, unknown>;
  } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims(options.extra))
    .setProtectedHeader({ alg: 'ES256', kid: options.kid ?? 'key-1', typ: 'JWT' })
    .setIssuer(options.iss ?? ISSUER)
    .setAudience(options.aud ?? AUDIENCE)
    .setIssuedAt(now - 10)
    .setExpirationTime(options.expS ?? now + 3600)
    .sign(options.key ?? signingKey);
}

async function hs256(secret = SECRET, extra: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims(extra))
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(secret));
}

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  signingKey = pair.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'key-1', alg: 'ES256', use: 'sig' };
  otherKey = (await generateKeyPair('ES256')).privateKey;
  // The project's JWKS endpoint, as Supabase Auth serves it.
  server = createServer((req, res) => {
    if (req.url === '/auth/v1/.well-known/jwks.json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [publicJwk] }));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/auth/v1/.well-known/jwks.json`;
  verifier = createTokenVerifier({ audience: AUDIENCE, issuer: ISSUER, jwksUrl, legacySecret: SECRET });
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
});

describe('accepts', () => {
  it('a valid ES256 token checked against the JWKS endpoint', async () => {
    const result = await verifier.verify(await es256({ extra: { app_metadata: { role: 'support' } } }));
    expect(result).toEqual({
      ok: true,
      user: expect.objectContaining({
        userId: USER,
        email: 'alice@example.test',
        isSupport: true,
        sessionId: 'sess_1',
        aal: 'aal1',
      }),
    });
  });

  it('a valid legacy HS256 token signed with the project secret', async () => {
    const result = await verifier.verify(await hs256());
    expect(result).toMatchObject({ ok: true, user: { userId: USER, isSupport: false } });
  });

  it('a local key set instead of the endpoint', async () => {
    const local = createTokenVerifier({ audience: AUDIENCE, jwks: { keys: [publicJwk] } });
    expect((await local.verify(await es256())).ok).toBe(true);
  });
});

describe('refuses', () => {
  const refusals: [string, () => Promise<string>, TokenFailureCode][] = [
    ['an expired token', async () => es256({ expS: Math.floor(Date.now() / 1000) - 60 }), 'token_expired'],
    ['a wrong audience', async () => es256({ aud: 'anon' }), 'audience_mismatch'],
    ['a wrong issuer', async () => es256({ iss: 'https://evil.example/auth/v1' }), 'issuer_mismatch'],
    [
      'a token signed by another key with the same kid',
      async () => es256({ key: otherKey }),
      'signature_invalid',
    ],
    [
      'a token whose kid is not in the key set',
      async () => es256({ key: otherKey, kid: 'key-9' }),
      'key_unknown',
    ],
    [
      'an HS256 token signed with another secret',
      async () => hs256('another-secret-that-is-also-32-characters-long'),
      'signature_invalid',
    ],
    [
      'alg none',
      async () =>
        new UnsecuredJWT(claims()).setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime('1h').encode(),
      'algorithm_refused',
    ],
    [
      'an HS256 token "signed" with the public key (algorithm confusion)',
      async () => hs256(JSON.stringify(publicJwk)),
      'signature_invalid',
    ],
    [
      'the anon key (no user, role anon)',
      async () => hs256(SECRET, { role: 'anon', sub: undefined }),
      'claims_invalid',
    ],
    ['a service role token', async () => hs256(SECRET, { role: 'service_role' }), 'claims_invalid'],
    ['garbage', async () => 'not.a.token', 'token_malformed'],
    ['nothing', async () => '', 'token_missing'],
    ['a huge token', async () => `${'a'.repeat(9_000)}.b.c`, 'token_malformed'],
  ];
  it.each(refusals)('%s', async (_name, make, code) => {
    expect(await verifier.verify(await make())).toEqual({ ok: false, code });
  });

  it('HS256 tokens when no legacy secret is configured', async () => {
    const asymmetricOnly = createTokenVerifier({ audience: AUDIENCE, jwks: { keys: [publicJwk] } });
    expect(await asymmetricOnly.verify(await hs256())).toEqual({ ok: false, code: 'algorithm_refused' });
  });

  it('with keys_unavailable (retryable) when the JWKS endpoint cannot be reached', async () => {
    const unreachable = createTokenVerifier({
      audience: AUDIENCE,
      jwksUrl: 'http://127.0.0.1:9/jwks.json',
      jwksTimeoutMs: 500,
    });
    expect(await unreachable.verify(await es256())).toEqual({ ok: false, code: 'keys_unavailable' });
  });
});

describe('middleware', () => {
  const app = new Hono<SupabaseAuthEnv>();
  app.use('/me/*', (c, next) => requireSupabaseUser(verifier)(c, next));
  app.get('/me/id', (c) => c.json({ userId: c.get('supabaseUser').userId }));

  it('lets a signed-in user through and refuses the rest with 401', async () => {
    const ok = await app.request('/me/id', { headers: { authorization: `Bearer ${await es256()}` } });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ userId: USER });
    const expired = await app.request('/me/id', {
      headers: { authorization: `Bearer ${await es256({ expS: Math.floor(Date.now() / 1000) - 60 })}` },
    });
    expect(expired.status).toBe(401);
    expect(await expired.json()).toEqual({ error: 'token_expired' });
    const missing = await app.request('/me/id');
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toContain('invalid_token');
  });

  it('parses only well-formed bearer headers', () => {
    expect(bearerToken('Bearer abc.def.ghi')).toBe('abc.def.ghi');
    expect(bearerToken('Basic abc')).toBeNull();
    expect(bearerToken('Bearer a b')).toBeNull();
    expect(bearerToken(undefined)).toBeNull();
  });
});
