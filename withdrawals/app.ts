/**
 * The withdrawal approval service's routes as main.ts serves them: the internal route always, the
 * signed-in user's route only when a token verifier is configured (SUPABASE_JWKS_URL or
 * SUPABASE_JWT_SECRET; shared/auth/from-config.ts).
 */
import { Hono } from 'hono';
import type { TokenVerifier } from '../shared/auth/verify-token.ts';
import { type WithdrawalServiceDeps, withdrawalRoutes } from './index.ts';
import { type UserWithdrawalRouteOptions, userWithdrawalRoutes } from './user-route.ts';

export interface WithdrawalAppOptions {
  internalApiToken: string;
  /** null: no user-facing route (`POST /me/withdrawals/approvals` answers 404). */
  verifier: TokenVerifier | null;
  userRoute?: Omit<UserWithdrawalRouteOptions, 'verifier'>;
}

export function withdrawalApp(deps: WithdrawalServiceDeps, options: WithdrawalAppOptions): Hono {
  const app = new Hono();
  app.route('/', withdrawalRoutes(deps, options.internalApiToken));
  if (options.verifier !== null) {
    app.route('/', userWithdrawalRoutes(deps, { ...options.userRoute, verifier: options.verifier }));
  }
  return app;
}
