/**
 * The indexer's guard around each step: waits for the step's Redis writes, and halts for good on an error
 * that no retry cures (a reorg deeper than reorgDepthMax, a wrong chain) — loudly: a fatal log line, a
 * metric and an audit row. A halted indexer refuses every further step.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { classifyRpcError, NonRetryableError, ReorgTooDeepError } from '../../shared/chain/rpc/index.ts';
import { insertAudit } from '../../shared/db/queries/ledger.ts';
import type { IndexerMetrics } from './metrics.ts';
import type { RuntimeState, StepResult } from './state.ts';

export interface GuardOptions {
  sql: postgres.Sql;
  chainId: number;
  logger: Logger;
  metrics: IndexerMetrics;
  state: RuntimeState;
  step: () => Promise<StepResult>;
  cacheWritten: () => Promise<void>;
}

/** The guarded step of one indexer (see the header). */
export function createGuardedStep(options: GuardOptions) {
  const { sql, chainId, logger, metrics, state, step, cacheWritten } = options;

  /** Records a halt durably and loudly: a fatal log line, a metric and an audit row. */
  const halt = async (error: NonRetryableError) => {
    state.status = 'halted';
    metrics.halts.inc({ code: error.code });
    logger.fatal(
      { code: error.code, detail: error instanceof ReorgTooDeepError ? error.detail : undefined, err: error },
      `ALERT indexer halted: ${error.message}`,
    );
    try {
      await insertAudit(sql, [
        {
          actor: 'indexer',
          action: error.code === 'reorg_too_deep' ? 'chain_reorg_too_deep' : 'indexer_halted',
          entityType: 'chain',
          entityId: String(chainId),
          data: {
            code: error.code,
            message: error.message,
            cursor:
              state.cursor === null
                ? null
                : { number: state.cursor.number.toString(), hash: state.cursor.hash },
          },
        },
      ]);
    } catch (auditError) {
      logger.error({ err: auditError }, 'could not write the halt to the audit log');
    }
  };

  const guarded = async (): Promise<StepResult> => {
    if (state.status === 'halted')
      throw new NonRetryableError('indexer_halted', 'the indexer halted; restart it after review');
    try {
      const result = await step();
      await cacheWritten();
      return result;
    } catch (error) {
      await cacheWritten();
      // viem wraps what our transport threw; the class decides, wherever it sits in the cause chain.
      const classified = classifyRpcError(error);
      if (classified instanceof NonRetryableError) {
        await halt(classified);
        throw classified;
      }
      throw error;
    }
  };

  return guarded;
}
