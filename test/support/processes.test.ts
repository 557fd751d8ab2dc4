// Proves a private redis-server or PgBouncer whose port another process took fails to start instead of taking that process for its own.
import { afterEach, describe, expect, it } from 'vitest';
import { startPgBouncer } from '../../scripts/dev/pgbouncer.ts';
import { startRedisServer } from './processes.ts';

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

describe('private servers on a port from freePort()', () => {
  it('a redis-server whose port is taken does not answer ready with the server that holds it', async () => {
    // The race of two chaos runs started at once: freePort() handed both the same port.
    const other = await startRedisServer();
    stops.push(() => other.destroy());
    await expect(startRedisServer([], { port: other.port })).rejects.toThrow(/exited|timed out/);
  });

  it('a PgBouncer whose port is taken does not answer ready with whatever holds it', async () => {
    const other = await startRedisServer();
    stops.push(() => other.destroy());
    await expect(
      startPgBouncer({
        upstreamHost: '127.0.0.1',
        upstreamPort: 5432,
        port: other.port,
        users: ['postgres'],
        startTimeoutMs: 5_000,
      }),
    ).rejects.toThrow(/did not start/);
  });
});
