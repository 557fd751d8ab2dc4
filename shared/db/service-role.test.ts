/**
 * The production guard against services running as a superuser (shared/db/service-role.ts), against
 * real roles: the superuser and a service role of the migrated test database, and a private cluster
 * that is down when the service starts (the check waits for it instead of blocking start-up).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { type PostgresCluster, startPostgresCluster } from '../../test/support/processes.ts';
import { createDatabase } from './client.ts';
import { guardServiceRole, roleFacts } from './service-role.ts';

let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});

afterAll(async () => {
  await services?.close();
});

function asRole(role: string): string {
  const url = new URL(services.databaseUrl);
  url.username = role;
  return url.toString();
}

describe('service role guard', () => {
  it('refuses a superuser in production with one line, and accepts a service role', async () => {
    const refused: string[] = [];
    const superuser = guardServiceRole({
      sql: services.database.sql,
      nodeEnv: 'production',
      service: 'hot-path',
      refuse: (line) => refused.push(line),
    });
    await superuser.checked;
    expect(refused).toEqual([
      'connected to Postgres as postgres, a superuser; a service connects as its own role (docs/ledger.md)',
    ]);

    const hotPath = createDatabase({ url: asRole('credana_hot_path'), poolMax: 1 });
    try {
      expect(await roleFacts(hotPath.sql)).toEqual({
        role: 'credana_hot_path',
        superuser: false,
        bypassesRowSecurity: false,
      });
      const accepted: string[] = [];
      await guardServiceRole({
        sql: hotPath.sql,
        nodeEnv: 'production',
        service: 'hot-path',
        refuse: (line) => accepted.push(line),
      }).checked;
      expect(accepted).toEqual([]);
    } finally {
      await hotPath.close();
    }
  });

  it('leaves development and test alone', async () => {
    const refused: string[] = [];
    for (const nodeEnv of ['development', 'test'] as const) {
      await guardServiceRole({
        sql: services.database.sql,
        nodeEnv,
        service: 'hot-path',
        refuse: (line) => refused.push(line),
      }).checked;
    }
    expect(refused).toEqual([]);
  });

  it('does not hold start-up while Postgres is down, and judges the role once it answers', async () => {
    let cluster: PostgresCluster | undefined;
    const database = { close: async () => {} } as { close(): Promise<void> };
    try {
      cluster = await startPostgresCluster();
      await cluster.stopAsync();
      const down = createDatabase({ url: cluster.url, poolMax: 1, connectTimeoutS: 1 });
      database.close = () => down.close();
      const refused: string[] = [];
      const guard = guardServiceRole({
        sql: down.sql,
        nodeEnv: 'production',
        service: 'ledger-writer',
        retryMs: 50,
        refuse: (line) => refused.push(line),
      });
      // Returned at once; nothing judged while the server is down.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(refused).toEqual([]);
      await cluster.startAsync();
      await guard.checked;
      expect(refused).toEqual([expect.stringContaining('as postgres, a superuser')]);
    } finally {
      await database.close();
      cluster?.destroy();
    }
  });
});
