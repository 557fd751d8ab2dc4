/**
 * The Redis layout (docs/redis-layout.md explains it). Every key of one user carries the hash tag of
 * the user's *shard*, `{s:NNN}`, and so does that shard's outbox stream: a single Lua script can then
 * check a position, reserve the hold and append the decision record atomically, unchanged on a Redis
 * Cluster (one slot per shard). A per-user tag, as first designed, would have needed one outbox
 * stream per user, since a script may only touch keys of one slot.
 *
 * 256 shards: a cluster can spread over up to 256 primaries, and over 50 they split 5 or 6 each (the
 * 256 tags hash to 256 distinct slots); each ledger writer polls only the shards it owns
 * (ledger-writer/shards.ts). docs/redis-layout.md has the figures and how to reshard.
 *
 * It is an invariant that OUTBOX_SHARDS never changes for a deployment with live data: a user's keys
 * and the entries already in a stream would be left in the old shard. Changing it means draining the
 * outbox and rebuilding the cache (docs/redis-layout.md, "Changing the shard count").
 */
export const OUTBOX_SHARDS = 256;

/** FNV-1a over the id: stable across processes and languages. */
export function shardOf(id: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % OUTBOX_SHARDS;
}

function tag(shard: number): string {
  return `{s:${shard.toString().padStart(3, '0')}}`;
}

export interface UserKeys {
  /** HASH: version, limits, debt, unsettled, holds, collateral per asset. */
  account: string;
  /** HASH cardId → "status|frozen". */
  cards: string;
  /** HASH authorizationId → held cents. */
  holds: string;
  /** ZSET authorizationId → expiry (ms). */
  holdExpiries: string;
  /** STRING: first answer to one request event (idempotency), with a TTL. */
  decision(eventId: string): string;
  /** STRING: marks a lifecycle event as applied to this cache, with a TTL. */
  applied(eventId: string): string;
  /** STRING: cents approved on one UTC day. */
  daySpend(yyyymmdd: string): string;
  /** ZSET: decisions of the last minute (velocity). */
  velocity: string;
  /**
   * STRING counter, bumped by every writer that changed Postgres before updating the cache. A rebuild
   * reads it before its Postgres snapshot and installs only if it is unchanged, so a snapshot taken
   * before a concurrent change can never be installed after it.
   */
  changes: string;
  /** HASH: one authorization's cache state (ver, cap = captured cents, t = terminal). */
  authState(authorizationId: string): string;
  /** STRING counter: the user's withdrawal approval requests in the current window (with its TTL). */
  withdrawalRequests: string;
  /** The shard's outbox stream, drained by the ledger writer. */
  outbox: string;
}

export function userKeys(prefix: string, userId: string): UserKeys {
  const t = tag(shardOf(userId));
  const base = `${prefix}${t}:u:${userId}`;
  return {
    account: `${base}:acct`,
    cards: `${base}:cards`,
    holds: `${base}:holds`,
    holdExpiries: `${base}:hexp`,
    decision: (eventId) => `${base}:dec:${eventId}`,
    applied: (eventId) => `${base}:ev:${eventId}`,
    daySpend: (yyyymmdd) => `${base}:day:${yyyymmdd}`,
    velocity: `${base}:vel`,
    changes: `${base}:chg`,
    authState: (authorizationId) => `${base}:a:${authorizationId}`,
    withdrawalRequests: `${base}:wdr`,
    outbox: outboxKey(prefix, shardOf(userId)),
  };
}

export function outboxKey(prefix: string, shard: number): string {
  return `${prefix}${tag(shard)}:outbox`;
}

export function allOutboxKeys(prefix: string): string[] {
  return Array.from({ length: OUTBOX_SHARDS }, (_, shard) => outboxKey(prefix, shard));
}

/**
 * STRING: the lease of a shard's ledger writer (its writer id, with a TTL); in the shard's slot, so a
 * cluster routes it with the stream (ledger-writer/shards.ts).
 */
export function shardLeaseKey(prefix: string, shard: number): string {
  return `${prefix}${tag(shard)}:writer`;
}

/** ZSET writer id → heartbeat expiry (ms): the live ledger writers, which share the shards. */
export function writersKey(prefix: string): string {
  return `${prefix}ledger-writers`;
}

/** Dead-letter stream for outbox entries that keep failing. */
export function deadLetterKey(prefix: string): string {
  return `${prefix}outbox:dead`;
}

/**
 * SET of a user's dead-lettered outbox entries (`<stream> <id>`) whose money Redis has and Postgres
 * does not. In the user's shard, so a rebuild's guard script can read it with the user's keys.
 */
export function userDeadLettersKey(prefix: string, userId: string): string {
  return `${prefix}${tag(shardOf(userId))}:u:${userId}:dl`;
}

/** HASH cardId → userId. A card never changes owner, so processes cache it forever. */
export function cardIndexKey(prefix: string): string {
  return `${prefix}cards`;
}

/** Keys for events whose card is unknown (no user, so the event's own shard). */
export function unknownCardDecisionKey(prefix: string, eventId: string): string {
  return `${prefix}${tag(shardOf(eventId))}:nocard:dec:${eventId}`;
}

export function unknownCardAppliedKey(prefix: string, eventId: string): string {
  return `${prefix}${tag(shardOf(eventId))}:nocard:ev:${eventId}`;
}

export function unknownCardOutboxKey(prefix: string, eventId: string): string {
  return outboxKey(prefix, shardOf(eventId));
}

/**
 * Pub/sub channels (global, not per user). One hash tag for all of them: on a Redis Cluster they are
 * sharded channels of one slot, so a process subscribes to all of them on one connection
 * (shared/redis/pubsub.ts).
 */
export function channels(prefix: string) {
  return {
    prices: `${prefix}{ch}:prices`,
    assets: `${prefix}{ch}:assets`,
    cards: `${prefix}{ch}:cards`,
  } as const;
}

/** HASH assetId → JSON of the latest price (answer, updatedAtS, roundId). */
export function pricesKey(prefix: string): string {
  return `${prefix}prices`;
}

/** HASH assetId → JSON of the asset's risk parameters. */
export function assetsKey(prefix: string): string {
  return `${prefix}assets`;
}

/** Account hash field names, short on purpose (they are read on every decision). */
export const ACCOUNT = {
  version: 'v',
  status: 'st',
  creditLimitCents: 'lim',
  dailyLimitCents: 'dlim',
  blockedMccs: 'mcc',
  debtOnchainUsdc: 'debt',
  debtOnchainCents: 'debtc',
  unsettledCents: 'uns',
  holdsCents: 'hold',
  builtAtMs: 'built',
  collateralPrefix: 'c:',
  pendingWithdrawalPrefix: 'w:',
} as const;
