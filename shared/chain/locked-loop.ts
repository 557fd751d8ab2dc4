/**
 * The loop of a chain worker that must run once per chain (the settlement worker, the liquidator):
 * take the chain's session lock (waiting out an unreachable Postgres) or fail when another process holds
 * it, then run a round every poll interval until told to stop;
 * a round that throws is logged and the next one tries again. The lock is released on the way out.
 *
 * It is an invariant that a round runs only while this process holds the lock. The lock lives on one
 * Postgres connection: when that connection is lost (Postgres restarted, the backend terminated, the
 * network cut), the lock is gone and another process may take it. So before each round the loop asks
 * Postgres, on that connection, whether it still holds the lock, and stops with LockLostError when it
 * does not (or cannot tell within LIMITS.sessionLockCheckTimeoutMs): the process exits and its
 * supervisor restarts it, to take the lock again or find another process holding it.
 */

import type { Logger } from 'pino';
import type postgres from 'postgres';
import { type ExclusiveSession, tryExclusiveSession } from '../db/locks.ts';
import { LIMITS } from './limits.ts';

export interface LockedLoopOptions {
  sql: postgres.Sql;
  lock: number;
  chainId: number;
  /** Who holds the lock, for the error when another process has it ("settlement worker"). */
  holder: string;
  round: () => Promise<unknown>;
  stopping: () => boolean;
  /** A wakeable sleep (sleeper.ts), so stop() does not wait out a poll interval. */
  sleep: (ms: number) => Promise<void>;
  pollIntervalMs: number;
  logger: Logger;
  /** Where readiness reads whether the lock is held (createLockStatus). */
  status?: LockStatus;
}

/** The session lock was lost while the loop ran: stop, so no round runs without it. */
export class LockLostError extends Error {
  readonly code = 'session_lock_lost';
}

/** Whether a worker holds its chain's session lock right now, for /readyz and the lock gauge. */
export interface LockStatus {
  held(): Promise<boolean>;
  /** Set by runLockedLoop: the check while it holds the lock, null before and after. */
  attach(check: (() => Promise<boolean>) | null): void;
}

export function createLockStatus(): LockStatus {
  let check: (() => Promise<boolean>) | null = null;
  return {
    held: async () => (check === null ? false : check().catch(() => false)),
    attach(next) {
      check = next;
    },
  };
}

async function within(check: Promise<boolean>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([check.catch(() => false), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Takes the chain's session lock. Postgres unreachable (a cut, a restart) is waited out, a poll
 * interval at a time, until it answers or the worker is told to stop (null): a worker started during an
 * outage does not exit and leave the chain unattended until a supervisor's restart (chaos seed 5,
 * docs/chaos.md). A refused configuration (a transaction-pooled URL) still throws at once.
 */
async function takeLock(options: LockedLoopOptions): Promise<ExclusiveSession | null> {
  for (;;) {
    try {
      return await tryExclusiveSession(options.sql, options.lock, options.chainId);
    } catch (error) {
      if (!isConnectionError(error)) throw error;
      options.logger.warn(
        { err: error },
        `${options.holder}: Postgres did not answer while taking the chain's lock; retrying`,
      );
    }
    await options.sleep(options.pollIntervalMs);
    if (options.stopping()) return null;
  }
}

/** A lost or refused connection (node's socket errors, postgres.js's connection errors). */
function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return (
    typeof code === 'string' &&
    /^(ECONN|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|CONNECT_TIMEOUT|CONNECTION_|57P0)/.test(code)
  );
}

export async function runLockedLoop(options: LockedLoopOptions): Promise<void> {
  const session = await takeLock(options);
  if (session === null && options.stopping()) return;
  if (session === null) throw new Error(`another ${options.holder} holds chain ${options.chainId}`);
  const held = () => within(session.held(), LIMITS.sessionLockCheckTimeoutMs);
  options.status?.attach(held);
  try {
    while (!options.stopping()) {
      if (!(await held())) {
        throw new LockLostError(
          `${options.holder}: lost its session lock on chain ${options.chainId} (its Postgres connection ended); stopping so no round runs without it`,
        );
      }
      try {
        await options.round();
      } catch (error) {
        options.logger.warn({ err: error }, `${options.holder}: round failed; retrying`);
      }
      await options.sleep(options.pollIntervalMs);
    }
  } finally {
    options.status?.attach(null);
    // A lost connection cannot unlock (nothing to unlock, and its query may never answer): release
    // what is left of it, waiting no longer than a lock check.
    await within(
      session.release().then(() => true),
      LIMITS.sessionLockCheckTimeoutMs,
    );
  }
}
