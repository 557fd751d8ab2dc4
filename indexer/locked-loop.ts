/**
 * The loop of a chain worker that must run once per chain (the settlement worker, the liquidator):
 * take the chain's session lock or fail, then run a round every poll interval until told to stop;
 * a round that throws is logged and the next one tries again. The lock is released on the way out.
 */

import type { Logger } from 'pino';
import type postgres from 'postgres';
import { tryExclusive } from './store/index.ts';

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
}

export async function runLockedLoop(options: LockedLoopOptions): Promise<void> {
  const release = await tryExclusive(options.sql, options.lock, options.chainId);
  if (release === null) throw new Error(`another ${options.holder} holds chain ${options.chainId}`);
  try {
    while (!options.stopping()) {
      try {
        await options.round();
      } catch (error) {
        options.logger.warn({ err: error }, `${options.holder}: round failed; retrying`);
      }
      await options.sleep(options.pollIntervalMs);
    }
  } finally {
    await release();
  }
}
