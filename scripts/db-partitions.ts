/**
 * `npm run db:partitions [-- --months-ahead=N]`: creates the `card_events` partitions for the current
 * UTC month and the N next ones (default 3), prints what it created, and exits 1 when the default
 * partition holds rows. Schedule it daily: it is idempotent and safe to run concurrently.
 */
import { parseArgs } from 'node:util';
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import {
  DefaultPartitionNotEmptyError,
  type EnsurePartitionsResult,
  ensureCardEventPartitions,
  PARTITION_MONTHS_AHEAD_DEFAULT,
  PARTITION_MONTHS_AHEAD_MAX,
} from '../shared/db/partitions.ts';

// sysexits.h: EX_USAGE for a bad command line.
const EX_USAGE = 64;

function monthsAheadFromArgs(): number {
  let values: { 'months-ahead'?: string | undefined };
  try {
    ({ values } = parseArgs({ options: { 'months-ahead': { type: 'string' } }, strict: true }));
  } catch (error) {
    process.stderr.write(`db:partitions: ${(error as Error).message}\n`);
    process.exit(EX_USAGE);
  }
  const text = values['months-ahead'];
  if (text === undefined) return PARTITION_MONTHS_AHEAD_DEFAULT;
  const months = /^\d{1,3}$/.test(text) ? Number(text) : Number.NaN;
  if (!(months <= PARTITION_MONTHS_AHEAD_MAX)) {
    process.stderr.write(
      `db:partitions: --months-ahead must be an integer in 0..${PARTITION_MONTHS_AHEAD_MAX}\n`,
    );
    process.exit(EX_USAGE);
  }
  return months;
}

function report(result: EnsurePartitionsResult, monthsAhead: number): void {
  const created = result.created.length > 0 ? result.created.join(', ') : 'nothing (all present)';
  process.stdout.write(
    `db:partitions: from ${result.fromMonth} for ${monthsAhead + 1} month(s), created: ${created}\n`,
  );
}

const monthsAhead = monthsAheadFromArgs();
const config = configFromProcess();
const database = createDatabase({
  url: config.DATABASE_URL,
  poolMax: 1,
  statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  applicationName: 'credana-db-partitions',
});
try {
  const result = await ensureCardEventPartitions(database.sql, { now: new Date(), monthsAhead });
  report(result, monthsAhead);
} catch (error) {
  if (!(error instanceof DefaultPartitionNotEmptyError)) throw error;
  report(error.result, monthsAhead);
  process.stderr.write(`db:partitions: ${error.message}\n`);
  process.exitCode = 1;
} finally {
  await database.close();
}
