/**
 * The writer's batch write and its retries: one batch in one transaction (its shards' fences checked
 * first); a retryable failure retries the same batch forever with capped backoff; a data failure isolates
 * the poison entry by entry and dead-letters it; a fenced shard's entries are left to its new owner.
 * See writer.ts for the failure table.
 */
import type { Sql } from '../shared/db/client.ts';
import { classifyError } from '../shared/errors.ts';
import type { Logger } from '../shared/observability/logger.ts';
import { type DeadLetterProblem, errorText } from '../shared/outbox/dead-letters.ts';
import type { RawEntry } from '../shared/outbox/records.ts';
import { HOLD_EXPIRY_DEFAULTS } from '../shared/policy/hold-expiry.ts';
import { limits } from './limits.ts';
import type { LedgerWriterMetrics } from './metrics.ts';
import { checkFence, type ShardOwnership } from './shards.ts';
import { type ApplyOptions, ArchiveError, applyBatch, FencedError, type ParsedEntry } from './write-batch.ts';

export type RawByKey = Map<string, RawEntry>;

export interface BatchWriterOptions {
  sql: Sql;
  leaseMs: number;
  apply?: ApplyOptions | undefined;
  metrics: LedgerWriterMetrics;
  logger?: Logger | undefined;
  ownership: Pick<ShardOwnership, 'fenced'>;
  /** The writer's run state: `stopping` is read, `state` moves between 'running' and 'retrying'. */
  status: { stopping: boolean; state: string };
  /** Copies an entry to the dead-letter stream and acks it (ack.ts). */
  deadLetterEntry: (raw: RawEntry, error: string, problem: DeadLetterProblem) => Promise<void>;
}

export type BatchWriter = ReturnType<typeof createBatchWriter>;

/**
 * Whether the whole batch is retried (true) rather than isolated entry by entry to find a poison one
 * (false), by the error's class (shared/errors.ts): an outage (`environment`: a connection, a
 * conflict, a timeout, a restart) and the deployment's fault (`deployment`: a missing grant or
 * migration) are retried with backoff — no entry could be written, and dead-lettering good entries
 * would leave them all to replay by hand; the writer reports `retrying` meanwhile. The record's
 * fault (`data`: SQLSTATE classes 22, 23) and anything else (`bug`: a RAISE, a TypeError) are
 * isolated, so one bad entry is dead-lettered and the others written.
 */
export function isRetryable(error: unknown): boolean {
  const { fault } = classifyError(error);
  return fault === 'environment' || fault === 'deployment';
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** One timed, fenced batch transaction, and what to do with a batch whose shards were taken over. */
export function createFencedApply(
  options: Pick<BatchWriterOptions, 'sql' | 'leaseMs' | 'apply' | 'metrics' | 'logger' | 'ownership'>,
) {
  const { sql, leaseMs, metrics, logger, ownership } = options;

  /**
   * Applies one batch. Its entries, once committed, go to `committed`, acked together when the read
   * they came in is written (one XACK + XDEL per stream and read, not per batch: a read spans many
   * shards).
   */
  async function applyTimed(
    batch: readonly ParsedEntry[],
    epochs: ReadonlyMap<string, bigint>,
    committed: ParsedEntry[],
  ): Promise<void> {
    const fenced = new Map<string, bigint>();
    for (const entry of batch) fenced.set(entry.stream, epochs.get(entry.stream) ?? -1n);
    const end = metrics.batchDuration.startTimer();
    const result = await applyBatch(sql, batch, {
      ...(options.apply ?? { holdExpiry: HOLD_EXPIRY_DEFAULTS }),
      fence: (tx) => checkFence(tx, fenced, leaseMs),
    });
    end();
    metrics.batchSize.observe(batch.length);
    for (const entry of batch) committed.push(entry);
    metrics.entriesWritten.inc({ result: 'applied' }, result.applied);
    metrics.entriesWritten.inc({ result: 'duplicate' }, result.duplicates);
  }

  /**
   * A transaction found shards taken over: they are dropped, and their entries left pending for the new
   * owner (not acked, not dead-lettered). Returns the entries still this writer's to write.
   */
  function withoutFenced(
    batch: ParsedEntry[],
    error: FencedError,
    epochs: ReadonlyMap<string, bigint>,
  ): ParsedEntry[] {
    ownership.fenced(error.streams, epochs);
    const lost = new Set(error.streams);
    logger?.warn(
      { streams: error.streams },
      'ledger writer: shards taken over mid-batch; left to their owner',
    );
    return batch.filter((entry) => !lost.has(entry.stream));
  }

  return { applyTimed, withoutFenced };
}

/** Batch writes with retries and poison isolation (see the header); `applyWithRetry` is the entry point. */
export function createBatchWriter(options: BatchWriterOptions) {
  const { metrics, logger, status, deadLetterEntry } = options;
  const { applyTimed, withoutFenced } = createFencedApply(options);

  /** Applies one batch; returns false when it gave up because the writer is stopping. */
  async function applyWithRetry(
    batch: ParsedEntry[],
    raws: RawByKey,
    epochs: ReadonlyMap<string, bigint>,
    committed: ParsedEntry[],
  ): Promise<boolean> {
    let backoff: number = limits.retryBackoffMsMin;
    for (;;) {
      if (batch.length === 0) return true;
      try {
        await applyTimed(batch, epochs, committed);
        if (status.state === 'retrying') status.state = 'running';
        return true;
      } catch (error) {
        if (error instanceof FencedError) {
          batch = withoutFenced(batch, error, epochs);
          continue;
        }
        if (!isRetryable(error)) {
          metrics.batchFailures.inc({ kind: 'data' });
          logger?.warn(
            { err: errorText(error), code: classifyError(error).code, size: batch.length },
            'ledger writer: batch failed, isolating',
          );
          return isolate(batch, raws, epochs, committed);
        }
        metrics.batchFailures.inc({ kind: 'retryable' });
        if (status.stopping) return false;
        status.state = 'retrying';
        logger?.warn(
          { err: errorText(error), code: classifyError(error).code, backoffMs: backoff },
          'ledger writer: Postgres unavailable, retrying',
        );
        await sleep(backoff);
        backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
      }
    }
  }

  /** Entry by entry, in order, so a poison entry is found and the others are written. */
  async function isolate(
    batch: ParsedEntry[],
    raws: RawByKey,
    epochs: ReadonlyMap<string, bigint>,
    committed: ParsedEntry[],
  ): Promise<boolean> {
    const lost = new Set<string>();
    for (let i = 0; i < batch.length; i++) {
      const entry = batch[i]!;
      if (lost.has(entry.stream)) continue;
      for (let attempt = 1; ; attempt++) {
        try {
          await applyTimed([entry], epochs, committed);
          break;
        } catch (error) {
          if (error instanceof FencedError) {
            // Not poison: the shard is someone else's now, and so is this entry.
            for (const stream of error.streams) lost.add(stream);
            withoutFenced([], error, epochs);
            break;
          }
          if (isRetryable(error)) {
            // Not poison after all: the environment failed. Back to whole-batch retries for the rest.
            metrics.batchFailures.inc({ kind: 'retryable' });
            if (status.stopping) return false;
            await sleep(limits.retryBackoffMsMin);
            return applyWithRetry(
              batch.slice(i).filter((e) => !lost.has(e.stream)),
              raws,
              epochs,
              committed,
            );
          }
          if (attempt >= limits.poisonAttemptsMax) {
            const raw = raws.get(`${entry.stream} ${entry.id}`) ?? {
              stream: entry.stream,
              id: entry.id,
              fields: {},
            };
            await deadLetterEntry(
              raw,
              errorText(error),
              error instanceof ArchiveError ? 'archive' : 'failed',
            );
            break;
          }
          await sleep(limits.poisonRetryDelayMs * attempt);
        }
      }
    }
    return true;
  }

  return { applyWithRetry };
}
