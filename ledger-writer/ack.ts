/**
 * What ends an entry's stay in its stream: XACK + XDEL once its effects are committed (ack, and
 * ackBehind, which lets the ack travel while the next read is written), or a copy to the dead-letter
 * stream and then the ack (deadLetterEntry). It is an invariant that an entry is acked only after its
 * effects are committed or it is dead-lettered.
 */
import type { Logger } from '../shared/observability/logger.ts';
import {
  appendDeadLetter,
  type DeadLetterProblem,
  errorText,
  missesMoney,
  summarize,
} from '../shared/outbox/dead-letters.ts';
import type { RawEntry } from '../shared/outbox/records.ts';
import type { Redis } from '../shared/redis/client.ts';
import { deadLetterKey } from '../shared/redis/keys.ts';
import { limits } from './limits.ts';
import type { LedgerWriterMetrics } from './metrics.ts';

export interface AckerOptions {
  redis: Redis;
  prefix: string;
  group: string;
  metrics: LedgerWriterMetrics;
  logger?: Logger | undefined;
  /** Whether the writer is stopping: a failing ack or dead-letter append then gives up. */
  isStopping: () => boolean;
  /** The stream reader's NOGROUP handling (stream-read.ts). */
  recreateGroupIfGone: (stream: string, error: unknown) => Promise<boolean>;
}

export type Acker = ReturnType<typeof createAcker>;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The acks and dead letters of one writer (see the header). */
export function createAcker(options: AckerOptions) {
  const { redis, prefix, group, metrics, logger, recreateGroupIfGone } = options;
  const deadLetter = deadLetterKey(prefix);

  /** XACK + XDEL, atomically per stream (one slot each). Retried until Redis answers (the writes are committed). */
  async function ack(entries: readonly { stream: string; id: string }[]): Promise<void> {
    if (entries.length === 0) return;
    const byStream = new Map<string, string[]>();
    for (const e of entries) {
      const ids = byStream.get(e.stream) ?? [];
      ids.push(e.id);
      byStream.set(e.stream, ids);
    }
    await Promise.all(
      [...byStream].map(async ([stream, ids]) => {
        for (let backoff: number = limits.retryBackoffMsMin, attempt = 0; ; attempt++) {
          try {
            await redis
              .multi()
              .xack(stream, group, ...ids)
              .xdel(stream, ...ids)
              .exec();
            return;
          } catch (error) {
            // The group went with Redis's data: these entries are gone from Redis too (written, so
            // nothing to ack); the group is recreated for the entries that come after.
            if (await recreateGroupIfGone(stream, error).catch(() => false)) return;
            // Unacked entries are re-delivered and re-applied as duplicates: safe, so giving up on stop is fine.
            if (options.isStopping() && attempt >= 3) return;
            logger?.warn({ err: errorText(error) }, 'ledger writer: ack failed, retrying');
            await sleep(backoff);
            backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
          }
        }
      }),
    );
  }

  async function deadLetterEntry(raw: RawEntry, error: string, problem: DeadLetterProblem): Promise<void> {
    const summary = summarize(raw.fields);
    const money = missesMoney(problem, summary);
    for (let backoff: number = limits.retryBackoffMsMin; ; ) {
      try {
        await appendDeadLetter(redis, prefix, raw, error, problem);
        break;
      } catch (e) {
        if (options.isStopping()) return; // not acked: it comes back and is dead-lettered then
        logger?.warn({ err: errorText(e) }, 'ledger writer: dead-letter append failed, retrying');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, limits.retryBackoffMsMax);
      }
    }
    metrics.deadLettered.inc({ problem });
    const outstanding = await redis.xlen(deadLetter).catch(() => null); // else the next lag sample sets it
    if (outstanding !== null) metrics.deadLetters.set(outstanding);
    // Ids, user and amount only: the record and its raw event stay out of the logs.
    logger?.error(
      {
        stream: raw.stream,
        id: raw.id,
        problem,
        kind: summary.kind,
        userId: summary.userId,
        amountCents: summary.amountCents?.toString() ?? null,
        missesMoney: money,
        error,
      },
      money
        ? 'ledger writer: entry dead-lettered; Postgres lacks its money until it is replayed'
        : 'ledger writer: entry dead-lettered',
    );
    await ack([raw]);
  }

  /**
   * The ack of the last written read, still in flight. Acks run behind the writes: the next read is
   * applied while this one's XACK + XDEL travel. At most one is outstanding (the next waits for it), and
   * each starts only after its batches' COMMITs resolved, so nothing is acked before it is written.
   */
  let acking: Promise<void> = Promise.resolve();

  /**
   * Committed: ack in the background. ack() never rejects (it retries, and gives up only when
   * stopping, which leaves the entries to be re-delivered and found duplicates).
   */
  async function ackBehind(entries: readonly { stream: string; id: string }[]): Promise<void> {
    const previous = acking;
    acking = previous.then(() => ack(entries));
    await previous;
  }

  return {
    ack,
    ackBehind,
    deadLetterEntry,
    /** The ack still in flight, if any; resolves once it is done. */
    settled: (): Promise<void> => acking,
  };
}
