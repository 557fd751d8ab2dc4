/** Every bound of `npm run backup` and `npm run restore` in one place (STYLE.md). */
import assert from 'node:assert/strict';

export const limits = {
  /**
   * pgBackRest's `archive-timeout`: how long `check` and the end of a backup wait for a WAL segment to
   * reach the repository. A segment that takes longer means archiving is broken: fail loudly.
   */
  archivePushWaitS: 60,
  /** One pgbackrest command (a full backup of a large database takes hours; a hung one is killed). */
  commandTimeoutMs: 12 * 3_600_000,
  /** Output kept from one pgbackrest command (`info --output=json` of a long history included). */
  outputBytesMax: 64 * 1024 * 1024,
  /** `npm run restore --into <port>`: how long the restored server may replay WAL before serving. */
  restoreServingWaitS: 3_600,
  /** Postgres queries of the tools (settings, pg_switch_wal) give up after this. */
  statementTimeoutMs: 30_000,
} as const;

/** Checked at start: a bound that makes no sense is a programmer error. */
export function assertLimits(): void {
  assert(limits.archivePushWaitS >= 1 && limits.archivePushWaitS <= 3_600, 'archivePushWaitS');
  assert(limits.commandTimeoutMs > limits.archivePushWaitS * 1_000, 'commandTimeoutMs');
  assert(limits.outputBytesMax >= 1024 * 1024, 'outputBytesMax');
  assert(limits.restoreServingWaitS >= 10, 'restoreServingWaitS');
  assert(limits.statementTimeoutMs >= 1_000, 'statementTimeoutMs');
}
