/**
 * Who may read /metrics on a public port: only a caller presenting `Authorization: Bearer
 * <METRICS_TOKEN>`, and nobody when no token is configured (the internal listener serves it instead).
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** True when `authorization` carries exactly `Bearer <token>`; compared in constant time. */
export function metricsTokenPresented(authorization: string | undefined, token: string | undefined): boolean {
  if (token === undefined || authorization === undefined) return false;
  // Hash both sides so the comparison takes the same time whatever the lengths.
  const presented = createHash('sha256').update(authorization).digest();
  const expected = createHash('sha256').update(`Bearer ${token}`).digest();
  return timingSafeEqual(presented, expected);
}
