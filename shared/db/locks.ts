/**
 * Advisory locks the services take in Postgres: one process of a kind per chain (session locks on a
 * reserved connection) and the chain-apply transaction lock.
 */
import type postgres from 'postgres';
import { isTransactionPooled } from './client.ts';

/** Advisory lock keys (two-int form): the first names the lock, the second is the chain id. */
export const LOCK_INDEXER_SESSION = 7_431_100;

export const LOCK_CHAIN_APPLY = 7_431_101;

export const LOCK_SETTLEMENT_SESSION = 7_431_102;

export const LOCK_LIQUIDATOR_SESSION = 7_431_103;

export const LOCK_ANCHOR_SESSION = 7_431_104;

/**
 * Serialises everything that applies chain effects for one chain (range commits, wallet links), and
 * optionally sets the transaction's statement timeout in the same round trip.
 */
export async function lockChainApply(
  tx: postgres.TransactionSql,
  chainId: number,
  statementTimeoutMs?: number,
): Promise<void> {
  await tx`select pg_advisory_xact_lock(${LOCK_CHAIN_APPLY}::int, ${chainId}::int),
    case when ${statementTimeoutMs !== undefined}::bool
      then set_config('statement_timeout', ${String(statementTimeoutMs ?? 0)}, true) end`;
}

/**
 * Takes a session-level lock on a reserved connection so only one process of a kind runs per chain.
 * Returns a release function, or null when another process holds the lock. A killed process loses its
 * connection and so its lock.
 */
export async function tryExclusive(
  sql: postgres.Sql,
  lock: number,
  chainId: number,
): Promise<(() => Promise<void>) | null> {
  return (await tryExclusiveSession(sql, lock, chainId))?.release ?? null;
}

export interface ExclusiveSession {
  release(): Promise<void>;
  /**
   * True while the lock is still held: asks Postgres, on the lock's own connection, whether that
   * backend holds it. False when the connection was lost (a Postgres restart, a terminated backend, a
   * network cut): the lock died with it and another process may have taken it since.
   */
  held(): Promise<boolean>;
}

/** tryExclusive, plus a way to ask whether the lock is still held (ExclusiveSession.held). */
export async function tryExclusiveSession(
  sql: postgres.Sql,
  lock: number,
  chainId: number,
): Promise<ExclusiveSession | null> {
  // Behind a transaction pooler the lock would stay on a pooled server connection, and the next
  // client to borrow it (another worker of the same kind) would take it again: advisory locks are
  // re-entrant within one session.
  if (isTransactionPooled(sql)) {
    throw new Error(
      'this worker takes a session advisory lock: its DATABASE_URL must be direct or session-pooled, not ?pgbouncer=transaction',
    );
  }
  const conn = await sql.reserve();
  const [row] = await conn<
    { ok: boolean }[]
  >`select pg_try_advisory_lock(${lock}::int, ${chainId}::int) as ok`;
  if (row?.ok !== true) {
    conn.release();
    return null;
  }
  return {
    async release() {
      try {
        await conn`select pg_advisory_unlock(${lock}::int, ${chainId}::int)`;
      } finally {
        conn.release();
      }
    },
    async held() {
      // A reserved connection that was lost reconnects to a new backend, which holds nothing.
      const [state] = await conn<{ held: boolean }[]>`
        select exists (
          select 1 from pg_locks
          where locktype = 'advisory' and pid = pg_backend_pid() and granted
            and classid = ${lock}::int::oid and objid = ${chainId}::int::oid and objsubid = 2
        ) as held`;
      return state?.held === true;
    },
  };
}
