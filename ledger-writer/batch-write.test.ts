// Proves the writer's retry decision: a failure that a retry of the same batch may cure (connection
// errors, Postgres's conflict, permission, resource, shutdown, system and internal classes) is retryable, while a data
// exception (class 22) or integrity violation (class 23) is the record's fault and is isolated and
// dead-lettered instead; an error without a code is the data's fault. Pure function, no server: the
// retry and isolation loops themselves run against real Postgres in writer.test.ts and postgres-down.test.ts.
import { describe, expect, it } from 'vitest';
import { isRetryable } from './batch-write.ts';

describe('isRetryable', () => {
  it('retries the environment, isolates the data', () => {
    for (const code of [
      'ECONNREFUSED',
      'CONNECTION_CLOSED',
      'CONNECT_TIMEOUT',
      '08006',
      '40001',
      '40P01',
      '42501',
      '53300',
      '55P03',
      '57P01',
      '58030',
    ]) {
      expect(isRetryable({ code }), code).toBe(true);
    }
    // A SQLSTATE that starts with a letter counts only on a Postgres error (shared/errors.ts), as the
    // driver raises it: class XX (internal error, data corrupted) is the server's, retried.
    expect(isRetryable(Object.assign(new Error('internal'), { name: 'PostgresError', code: 'XX000' }))).toBe(
      true,
    );
    for (const code of ['22003', '22P02', '23505', '23514', '23503']) {
      expect(isRetryable({ code }), code).toBe(false);
    }
    expect(isRetryable(new Error('no code'))).toBe(false);
    expect(isRetryable(null)).toBe(false);
    expect(isRetryable({ code: 42 })).toBe(false);
  });
});
