/**
 * `POST /me/withdrawals/approvals` {assetId}: a signed-in cardholder asks for the approval of their own
 * pending withdrawal of an asset (the dashboard calls it once the vault's delay has run).
 *
 * The user is the verified Supabase access token's `sub` (shared/auth/, `requireSupabaseUser`), never
 * the body: the body's unknown keys, a `userId` among them, are dropped. A Supabase user IS the
 * financial user with the same uuid — the bridge creates `users.id = auth.users.id` at sign-up
 * (supabase/sync/user-bridge.ts, financial-user.ts) — so no mapping table is read; a user the bridge
 * has not created yet is refused `user_not_linked`.
 *
 * Abuse: a caller with a valid session can only ever get approvals for their own vault account's
 * pending request, judged by `approveWithdrawal` (coverage, the indexer's reservation, a deadline of at
 * most `withdrawalApprovalTtlSMax`; the request id is the nonce, so any number of approvals pays out
 * once). What a loop would cost is the HSM signature, three RPC reads and a `withdrawal_approvals` row
 * per call: a per-user counter in Redis (the user's shard, with a TTL) allows
 * `WITHDRAWAL_LIMITS.withdrawalUserRequestsMax` requests per `withdrawalUserWindowS`, answered 429 beyond it before
 * anything is read or signed.
 *
 * Answers: 200 with the approval, 409 {approved: false, reason} (`user_not_linked` or a refusal of
 * `approveWithdrawal`), 400 invalid_request, 401 from the token check (503 when the JWKS endpoint is
 * down), 413 body_too_large, 429 rate_limited with Retry-After.
 */
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import { requireSupabaseUser, type SupabaseAuthEnv } from '../shared/auth/middleware.ts';
import type { TokenVerifier } from '../shared/auth/verify-token.ts';
import { userKeys } from '../shared/redis/keys.ts';
import { answerDecision, approveWithdrawal, assetIdSchema, type WithdrawalServiceDeps } from './index.ts';
import { WITHDRAWAL_LIMITS } from './limits.ts';

export interface UserWithdrawalRouteOptions {
  verifier: TokenVerifier;
  /** Requests per user per window (default WITHDRAWAL_LIMITS.withdrawalUserRequestsMax). */
  requestsMax?: number;
  /** The window (default WITHDRAWAL_LIMITS.withdrawalUserWindowS). */
  windowS?: number;
}

/** Unknown keys are dropped, not refused: a `userId` in the body is ignored, the token names the user. */
const userApprovalRequest = z.object({ assetId: assetIdSchema });

/**
 * Counts one request in the user's window and returns [count, seconds left]. The TTL is set whenever
 * the key has none, in the same script, so a counter can never outlive its window.
 */
const COUNT_REQUEST = `
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}`;

export function userWithdrawalRoutes(
  deps: WithdrawalServiceDeps,
  options: UserWithdrawalRouteOptions,
): Hono<SupabaseAuthEnv> {
  const requestsMax = options.requestsMax ?? WITHDRAWAL_LIMITS.withdrawalUserRequestsMax;
  const windowS = options.windowS ?? WITHDRAWAL_LIMITS.withdrawalUserWindowS;
  const app = new Hono<SupabaseAuthEnv>();
  app.post(
    '/me/withdrawals/approvals',
    bodyLimit({
      maxSize: WITHDRAWAL_LIMITS.withdrawalRequestBytesMax,
      onError: (c) => c.json({ error: 'body_too_large' }, 413),
    }),
    requireSupabaseUser(options.verifier),
    async (c) => {
      const userId = c.get('supabaseUser').userId;
      const [count, ttlS] = (await deps.redis.eval(
        COUNT_REQUEST,
        1,
        userKeys(deps.prefix, userId).withdrawalRequests,
        windowS,
      )) as [number, number];
      if (count > requestsMax) {
        deps.onAnswer?.('rate_limited');
        c.header('Retry-After', String(Math.max(ttlS, 1)));
        return c.json({ error: 'rate_limited' }, 429);
      }
      const parsed = userApprovalRequest.safeParse(await c.req.json().catch(() => null));
      if (!parsed.success) {
        deps.onAnswer?.('invalid_request');
        return c.json({ error: 'invalid_request' }, 400);
      }
      const [linked] = await deps.sql`select 1 from users where id = ${userId}`;
      if (linked === undefined) {
        deps.onAnswer?.('user_not_linked');
        return c.json({ approved: false, reason: 'user_not_linked' }, 409);
      }
      return answerDecision(c, deps, await approveWithdrawal(deps, { userId, assetId: parsed.data.assetId }));
    },
  );
  return app;
}
