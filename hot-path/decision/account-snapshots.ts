/**
 * What the borrow power is computed from, per user, as last read from Redis: collateral, pending
 * withdrawals and the credit limit, with the account's version stamp. Every change to those bumps the
 * version (and a rebuilt account gets a new one, see installAccount), and the DECIDE script refuses a
 * stale version, so a decision is never made from an old snapshot: it is read again and retried. In
 * the steady state this saves the HGETALL — one Redis round trip per decision instead of two.
 * Used by the Redis decision (redis-decision.ts).
 */
import type { CollateralHolding } from '../../shared/credit.ts';
import type { Sql } from '../../shared/db/client.ts';
import { ensureAccount, holdingsFromAccount } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { ACCOUNT } from '../../shared/redis/keys.ts';
import { limits } from '../limits.ts';

export interface AccountSnapshot {
  version: string;
  holdings: CollateralHolding[];
  creditLimitCents: bigint;
}

/**
 * A snapshot to decide from; 'rebuilt' when the account was not in Redis and was rebuilt from Postgres
 * (read it again); 'absent' when the user does not exist. With the Redis round trips it took.
 */
export interface LoadedSnapshot {
  snapshot: AccountSnapshot | 'rebuilt' | 'absent';
  roundTrips: number;
}

export interface AccountSnapshots {
  /** The user's snapshot as last read, or the account read now (HGETALL) and remembered. */
  load(userId: string, accountKey: string): Promise<LoadedSnapshot>;
  /** The snapshot is out of date: the next load reads the account again. */
  forget(userId: string): void;
}

export function createAccountSnapshots(deps: {
  redis: Redis;
  sql: Sql;
  prefix: string;
  now: () => number;
}): AccountSnapshots {
  const { redis, sql, prefix, now } = deps;
  const snapshots = new Map<string, AccountSnapshot>();

  // Concurrent cold rebuilds of one account share a single flight, so a burst of swipes on a cold
  // process does not become a burst of identical Postgres queries.
  const accountFlights = new Map<string, Promise<boolean>>();

  function ensureAccountOnce(userId: string): Promise<boolean> {
    let flight = accountFlights.get(userId);
    if (flight === undefined) {
      flight = ensureAccount(redis, sql, prefix, userId, now()).finally(() => accountFlights.delete(userId));
      accountFlights.set(userId, flight);
    }
    return flight;
  }

  return {
    async load(userId, accountKey) {
      let snapshot = snapshots.get(userId);
      if (snapshot !== undefined) return { snapshot, roundTrips: 0 };
      const account = await redis.hgetall(accountKey);
      const version = account[ACCOUNT.version];
      if (version === undefined) {
        const exists = await ensureAccountOnce(userId);
        return { snapshot: exists ? 'rebuilt' : 'absent', roundTrips: 3 };
      }
      snapshot = {
        version,
        holdings: holdingsFromAccount(account),
        creditLimitCents: BigInt(account[ACCOUNT.creditLimitCents] ?? '0'),
      };
      if (snapshots.size >= limits.accountSnapshotsMax) snapshots.clear();
      snapshots.set(userId, snapshot);
      return { snapshot, roundTrips: 1 };
    },
    forget(userId) {
      snapshots.delete(userId);
    },
  };
}
