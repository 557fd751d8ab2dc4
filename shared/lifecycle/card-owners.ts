/**
 * Card → user, for the decision and for the lifecycle events. A card never changes owner, so the
 * answer is kept in memory forever (bounded by lifecycleLimits.cardCacheSizeMax); a miss asks Redis's card
 * index, then the system of record. Concurrent misses for one card share a single flight, so a burst
 * of swipes on a cold process does not become a burst of identical Postgres queries.
 */
import type { Sql } from '../db/client.ts';
import { type CardState, setCachedCard } from '../redis/account.ts';
import type { Redis } from '../redis/client.ts';
import { cardIndexKey } from '../redis/keys.ts';
import { lifecycleLimits } from './limits.ts';

export interface CardOwnerLookup {
  userId: string | null;
  /** Redis round trips this lookup cost (0 when answered from memory). */
  roundTrips: number;
}

export interface CardOwners {
  lookUp(cardId: string): Promise<CardOwnerLookup>;
  /** The owner if this process already knows it (no I/O). */
  known(cardId: string): string | undefined;
  /**
   * Forgets what this process remembers of the card and asks the system of record (not Redis's card
   * index, which may be what was wrong); puts the answer back into the index, the owner's cached cards
   * and memory. For a caller that found the remembered owner inconsistent with the cache.
   */
  resolveAgain(cardId: string): Promise<string | null>;
}

export function createCardOwners(deps: { redis: Redis; sql: Sql; prefix: string }): CardOwners {
  const { redis, sql, prefix } = deps;
  const owners = new Map<string, string>();
  const flights = new Map<string, Promise<CardOwnerLookup>>();

  function remember(cardId: string, userId: string | null): void {
    if (userId === null) return;
    if (owners.size >= lifecycleLimits.cardCacheSizeMax) owners.clear();
    owners.set(cardId, userId);
  }

  /**
   * Asks the system of record, and puts the card into the index and the user's cached account too if
   * that account is cached already (an account built before the card existed would otherwise answer
   * unknown_card). Returns the owner (null: no such card) and the Redis round trips it cost.
   */
  async function ownerFromPostgres(cardId: string): Promise<CardOwnerLookup> {
    const rows = await sql<{ user_id: string; status: CardState['status']; frozen: boolean }[]>`
      select user_id, status, (frozen or ops_frozen) as frozen from cards where id = ${cardId}`;
    const row = rows[0];
    if (row === undefined) return { userId: null, roundTrips: 0 };
    await setCachedCard(redis, prefix, row.user_id, { cardId, status: row.status, frozen: row.frozen });
    return { userId: row.user_id, roundTrips: 3 };
  }

  async function fetchOwner(cardId: string): Promise<CardOwnerLookup> {
    let userId = await redis.hget(cardIndexKey(prefix), cardId);
    let roundTrips = 1;
    if (userId === null) {
      // A card the cache has not seen (issued since, or the cache restarted empty).
      const found = await ownerFromPostgres(cardId);
      userId = found.userId;
      roundTrips += found.roundTrips;
    }
    remember(cardId, userId);
    return { userId, roundTrips };
  }

  return {
    known: (cardId) => owners.get(cardId),
    async resolveAgain(cardId) {
      owners.delete(cardId);
      const { userId } = await ownerFromPostgres(cardId);
      remember(cardId, userId);
      return userId;
    },
    lookUp(cardId) {
      const cached = owners.get(cardId);
      if (cached !== undefined) return Promise.resolve({ userId: cached, roundTrips: 0 });
      let flight = flights.get(cardId);
      if (flight === undefined) {
        flight = fetchOwner(cardId).finally(() => flights.delete(cardId));
        flights.set(cardId, flight);
      }
      return flight;
    },
  };
}
