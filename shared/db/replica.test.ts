/**
 * The read replica route on a real streaming replica (a private primary, `pg_basebackup -R`, a hot
 * standby): lag-tolerant reads go to the replica while it keeps up; stopped, they go to the primary
 * with the metric set and a log line; restarted, it catches up (lag back to 0 bytes) and reads return
 * to it. A promoted replica is never read as ours.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresCluster, startPostgresCluster } from '../../test/support/processes.ts';
import { type PostgresReplica, startPostgresReplica } from '../../test/support/replica.ts';
import { createDatabase, type Database } from './client.ts';
import { createReplicaReader, openReplicaReader, type ReplicaReader } from './replica.ts';

let primaryCluster: PostgresCluster;
let replicaCluster: PostgresReplica;
let primary: Database;
let replica: Database;
let reader: ReplicaReader;
const registry = new Registry();
const logLines: { msg: string; reason?: string; route?: string }[] = [];

beforeAll(async () => {
  primaryCluster = await startPostgresCluster();
  primary = createDatabase({ url: primaryCluster.url, poolMax: 2, applicationName: 'replica-test' });
  await primary.sql`create table readings (id int primary key, amount_cents bigint not null)`;
  await primary.sql`insert into readings select g, g * 100 from generate_series(1, 1000) g`;
  replicaCluster = await startPostgresReplica(primaryCluster);
  replica = createDatabase({
    url: replicaCluster.url,
    poolMax: 2,
    applicationName: 'replica-test',
    connectTimeoutS: 1,
  });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(JSON.parse(chunk.toString()));
      done();
    },
  });
  reader = createReplicaReader({
    primary: primary.sql,
    replica: replica.sql,
    lagBytesMax: 16 * 1024 * 1024,
    checkTimeoutMs: 2_000,
    // Every read re-checks: the test drives the route changes itself.
    checkIntervalMs: 0,
    logger: pino({ level: 'info' }, sink),
    registry,
    name: 'test',
  });
}, 60_000);

afterAll(async () => {
  await replica?.close();
  await primary?.close();
  replicaCluster?.destroy();
  primaryCluster?.destroy();
});

async function metric(name: string): Promise<{ labels: Record<string, string | number>; value: number }[]> {
  const found = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  return (found?.values ?? []) as { labels: Record<string, string | number>; value: number }[];
}

/** Waits until the replica has replayed everything the primary has written. */
async function caughtUp(): Promise<void> {
  const until = Date.now() + 20_000;
  for (;;) {
    const state = await reader.check();
    if (state.route === 'replica' && state.lagBytes === 0) return;
    if (Date.now() > until) throw new Error(`replica did not catch up: ${JSON.stringify(state)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function sumOn(sql: Database['sql']): Promise<{ total: string; standby: boolean }> {
  const [row] = await sql<{ total: string; standby: boolean }[]>`
    select sum(amount_cents)::text as total, pg_is_in_recovery() as standby from readings`;
  if (row === undefined) throw new Error('no row');
  return row;
}

describe('read replica route', () => {
  it('reads from the replica while it keeps up, with its lag as a metric', async () => {
    await caughtUp();
    expect(await sumOn(await reader.read())).toEqual({ total: '50050000', standby: true });
    expect(await metric('credana_replica_lag_bytes')).toEqual([{ labels: { reader: 'test' }, value: 0 }]);
    expect(await metric('credana_replica_reads_on_primary')).toEqual([
      { labels: { reader: 'test', reason: 'healthy' }, value: 0 },
    ]);
  });

  it('degrades to the primary when the replica stops, and comes back once it has caught up', async () => {
    await replicaCluster.stopAsync();
    // Written while the replica is down: it must replay this after its restart.
    await primary.sql`insert into readings select g, 1 from generate_series(1001, 2000) g`;
    const logged = logLines.length;
    expect(await sumOn(await reader.read())).toEqual({ total: '50051000', standby: false });
    expect(reader.state()).toMatchObject({ route: 'primary', reason: 'unreachable' });
    expect(await metric('credana_replica_reads_on_primary')).toEqual([
      { labels: { reader: 'test', reason: 'unreachable' }, value: 1 },
    ]);
    expect(await metric('credana_replica_lag_bytes')).toEqual([{ labels: { reader: 'test' }, value: -1 }]);
    // One line for the change of route, not one per read.
    await reader.read();
    expect(logLines.slice(logged)).toEqual([
      expect.objectContaining({ msg: expect.stringContaining('go to the primary'), reason: 'unreachable' }),
    ]);

    await replicaCluster.startAsync();
    await caughtUp();
    expect(await sumOn(await reader.read())).toEqual({ total: '50051000', standby: true });
    expect(logLines.at(-1)).toMatchObject({ msg: 'read replica in use', route: 'replica' });
  });

  it('reads the primary when the replica lags past the bound', async () => {
    const tight = createReplicaReader({
      primary: primary.sql,
      replica: replica.sql,
      lagBytesMax: 0,
      checkTimeoutMs: 2_000,
      checkIntervalMs: 0,
      logger: pino({ level: 'silent' }),
      name: 'tight',
    });
    // Replay paused on the replica: what the primary writes now is received but not replayed.
    await replica.sql`select pg_wal_replay_pause()`;
    await primary.sql`insert into readings select g, 0 from generate_series(3000, 3999) g`;
    const state = await tight.check();
    expect(await sumOn(await tight.read())).toEqual({ total: '50051000', standby: false });
    await replica.sql`select pg_wal_replay_resume()`;
    expect(state).toMatchObject({ route: 'primary', reason: 'lagging' });
    expect(state.lagBytes).toBeGreaterThan(0);
  });

  it('reads everything from the primary when no replica is configured', async () => {
    const none = createReplicaReader({
      primary: primary.sql,
      replica: null,
      lagBytesMax: 0,
      checkTimeoutMs: 2_000,
      checkIntervalMs: 60_000,
      logger: pino({ level: 'silent' }),
      name: 'none',
    });
    expect((await sumOn(await none.read())).standby).toBe(false);
    expect(none.state()).toMatchObject({ route: 'primary', reason: 'no_replica' });
  });

  it('opens the configured replica, and the primary alone when none is configured', async () => {
    const logger = pino({ level: 'silent' });
    const configured = openReplicaReader(
      { READ_REPLICA_URL: replicaCluster.url, READ_REPLICA_LAG_BYTES_MAX: 16_777_216 },
      primary.sql,
      { name: 'configured', logger },
    );
    const unset = openReplicaReader({ READ_REPLICA_LAG_BYTES_MAX: 16_777_216 }, primary.sql, {
      name: 'unset',
      logger,
    });
    try {
      expect((await sumOn(await configured.reader.read())).standby).toBe(true);
      expect((await sumOn(await unset.reader.read())).standby).toBe(false);
    } finally {
      await configured.close();
      await unset.close();
    }
  });

  // Last: it ends the replica's life as a standby.
  it('never reads a promoted replica as ours (it is a primary of its own, diverging)', async () => {
    await replica.sql`select pg_promote(true, 30)`;
    expect(await reader.check()).toMatchObject({ route: 'primary', reason: 'not_a_standby' });
    expect((await sumOn(await reader.read())).standby).toBe(false);
  });
});
