/**
 * The indexer's service loop: holds the chain's session lock (one indexer per chain), steps until
 * stopped, repairs the cache and sleeps when idle, retries a failing step with growing waits up to
 * LIMITS.stepFailuresMax, and gives up at once on an error no retry cures.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { LIMITS } from '../../shared/chain/limits.ts';
import { classifyRpcError, NonRetryableError } from '../../shared/chain/rpc/index.ts';
import { LOCK_INDEXER_SESSION, tryExclusive } from '../../shared/db/locks.ts';
import type { CacheWriter } from '../apply/redis.ts';
import type { IndexerMetrics } from './metrics.ts';
import type { RuntimeState, StepResult } from './state.ts';

export interface FollowChainOptions {
  sql: postgres.Sql;
  chainId: number;
  pollIntervalMs: number;
  logger: Logger;
  metrics: IndexerMetrics;
  cache: CacheWriter;
  state: RuntimeState;
  init: () => Promise<void>;
  guarded: () => Promise<StepResult>;
  /** Waits `ms`, or less when woken (stop()). */
  sleep: (ms: number) => Promise<void>;
}

/** Follows the chain until `state.stopping`; rejects when halted, locked out or out of retries. */
export async function followChain(options: FollowChainOptions): Promise<void> {
  const { sql, chainId, pollIntervalMs, logger, metrics, cache, state, init, guarded, sleep } = options;
  await init();
  const release = await tryExclusive(sql, LOCK_INDEXER_SESSION, chainId);
  if (release === null) {
    throw new NonRetryableError('indexer_already_running', `another indexer holds chain ${chainId}`);
  }
  state.status = 'running';
  let failures = 0;
  try {
    while (!state.stopping) {
      try {
        const result = await guarded();
        failures = 0;
        if (result.kind === 'idle') {
          await cache.repair();
          await sleep(pollIntervalMs);
        }
      } catch (raw) {
        if (raw instanceof NonRetryableError) throw raw;
        const error = classifyRpcError(raw);
        failures++;
        metrics.stepFailures.inc({ code: error.code });
        logger.warn({ err: raw, code: error.code, failures }, 'indexer step failed; retrying');
        if (failures >= LIMITS.stepFailuresMax) throw raw;
        await sleep(Math.min(pollIntervalMs * failures, 30_000));
      }
    }
    state.status = 'stopped';
  } finally {
    await release();
  }
}
