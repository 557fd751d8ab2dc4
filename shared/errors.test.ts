// Proves the error taxonomy on real errors: each one is provoked from the real Postgres (a unique
// violation, a statement timeout, a lock timeout, a deadlock, a terminated backend, a refused connection…)
// or the real Redis (WRONGTYPE, NOSCRIPT, NOGROUP, BUSYGROUP, a BUSY script on a private server, a
// closed connection, a command timeout) and classified by its code or class, never its message.
import { strict as assert } from 'node:assert';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRedis, setUpServices, type TestServices } from '../test/support/db.ts';
import { freePort, type RedisServer, startRedisServer } from '../test/support/processes.ts';
import { rejection } from '../test/support/rejection.ts';
import {
  classifyError,
  classifyPostgresError,
  classifyRedisCallError,
  classifyRedisError,
  NonRetryableError,
  RetryableError,
  replyCode,
} from './errors.ts';
import { createRedis } from './redis/client.ts';

let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});

afterAll(async () => {
  await services?.close();
});

describe('Postgres errors, by SQLSTATE and by code', () => {
  it('sorts data and integrity errors as the data’s fault, schema and privilege as the deployment’s', async () => {
    const sql = services.database.sql;
    await sql`create table errors_probe (id int primary key)`;
    await sql`insert into errors_probe values (1)`;
    const unique = await rejection(() => sql`insert into errors_probe values (1)`);
    expect((unique as { code: string }).code).toBe('23505');
    expect(classifyPostgresError(unique)).toEqual({ code: 'pg_integrity', fault: 'data', retryable: false });

    const division = await rejection(() => sql`select 1 / 0`);
    expect(classifyError(division)).toMatchObject({ code: 'pg_data', retryable: false });

    const undefinedTable = await rejection(() => sql`select * from no_such_table`);
    expect((undefinedTable as { code: string }).code).toBe('42P01');
    expect(classifyError(undefinedTable)).toMatchObject({ code: 'pg_schema', fault: 'deployment' });

    // A role without the grant: the hot path's role may not read the table made above.
    const denied = await rejection(() =>
      sql.begin(async (tx) => {
        await tx`set local role credana_hot_path`;
        await tx`select * from errors_probe`;
      }),
    );
    expect((denied as { code: string }).code).toBe('42501');
    expect(classifyError(denied)).toMatchObject({ code: 'pg_privilege', fault: 'deployment' });

    // A plain RAISE EXCEPTION (P0001), as the ledger's balance trigger raises: a bug, not an outage.
    const raised = await rejection(() => sql`do $$ begin raise exception 'unbalanced'; end $$`);
    expect((raised as { code: string }).code).toBe('P0001');
    expect(classifyError(raised)).toMatchObject({ code: 'pg_other', fault: 'bug', retryable: false });
  });

  it('sorts a statement timeout, a lock timeout and a deadlock as retryable', async () => {
    const sql = services.database.sql;
    const timeout = await rejection(() =>
      sql.begin(async (tx) => {
        await tx`set local statement_timeout = 50`;
        await tx`select pg_sleep(5)`;
      }),
    );
    expect((timeout as { code: string }).code).toBe('57014');
    expect(classifyError(timeout)).toEqual({ code: 'pg_canceled', fault: 'environment', retryable: true });

    await sql`create table errors_locks (id int primary key)`;
    await sql`insert into errors_locks values (1), (2)`;
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const holder = sql.begin(async (tx) => {
      await tx`select * from errors_locks where id = 1 for update`;
      locked();
      await held;
    });
    await isLocked;
    const lockTimeout = await rejection(() =>
      sql.begin(async (tx) => {
        await tx`set local lock_timeout = 50`;
        await tx`select * from errors_locks where id = 1 for update`;
      }),
    );
    release();
    await holder;
    expect((lockTimeout as { code: string }).code).toBe('55P03');
    expect(classifyError(lockTimeout)).toMatchObject({ code: 'pg_lock_unavailable', retryable: true });

    // Two transactions taking the same two rows in opposite orders: Postgres kills one (40P01).
    let firstLocked!: () => void;
    let secondLocked!: () => void;
    const both = Promise.all([
      new Promise<void>((r) => {
        firstLocked = r;
      }),
      new Promise<void>((r) => {
        secondLocked = r;
      }),
    ]);
    const results = await Promise.allSettled([
      sql.begin(async (tx) => {
        await tx`select * from errors_locks where id = 1 for update`;
        firstLocked();
        await both;
        await tx`select * from errors_locks where id = 2 for update`;
      }),
      sql.begin(async (tx) => {
        await tx`select * from errors_locks where id = 2 for update`;
        secondLocked();
        await both;
        await tx`select * from errors_locks where id = 1 for update`;
      }),
    ]);
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    const deadlock = (failed[0] as PromiseRejectedResult).reason;
    expect((deadlock as { code: string }).code).toBe('40P01');
    expect(classifyError(deadlock)).toMatchObject({ code: 'pg_conflict', retryable: true });
  });

  it('sorts a backend terminated mid-query and a refused connection as retryable', async () => {
    const victim = postgres(services.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const [row] = await victim<{ pid: number }[]>`select pg_backend_pid() as pid`;
      const pid = row?.pid;
      assert(pid !== undefined);
      const running = rejection(() => victim`select pg_sleep(10)`);
      // Terminated once its query runs (pg_stat_activity shows it active).
      for (;;) {
        const [row] = await services.database
          .sql`select state from pg_stat_activity where pid = ${pid} and query like '%pg_sleep(10)%'`;
        if (row?.['state'] === 'active') break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await services.database.sql`select pg_terminate_backend(${pid})`;
      const terminated = await running;
      expect((terminated as { code: string }).code).toBe('57P01');
      expect(classifyError(terminated)).toEqual({
        code: 'pg_shutdown',
        fault: 'environment',
        retryable: true,
      });
    } finally {
      await victim.end({ timeout: 1 });
    }

    const port = await freePort();
    const nobody = postgres(`postgres://postgres@127.0.0.1:${port}/postgres`, { max: 1, connect_timeout: 2 });
    const refused = await rejection(() => nobody`select 1`);
    await nobody.end({ timeout: 1 });
    expect((refused as { code: string }).code).toBe('ECONNREFUSED');
    expect(classifyPostgresError(refused)).toMatchObject({ code: 'pg_connection', retryable: true });
    const ended = await rejection(() => nobody`select 1`);
    expect((ended as { code: string }).code).toBe('CONNECTION_ENDED');
    expect(classifyPostgresError(ended)).toMatchObject({ code: 'pg_connection', retryable: true });
  });

  it('sorts a misuse of postgres.js as a bug', async () => {
    const misuse = await rejection(
      async () => services.database.sql`select ${undefined as unknown as number}`,
    );
    expect((misuse as { code: string }).code).toBe('UNDEFINED_VALUE');
    expect(classifyError(misuse)).toMatchObject({ code: 'pg_client', fault: 'bug', retryable: false });
  });
});

describe('Redis errors, by reply code and by class', () => {
  it('reads the reply code of WRONGTYPE, NOSCRIPT, NOGROUP, BUSYGROUP and ERR', async () => {
    const redis = services.redis;
    const key = `${services.prefix}errors:string`;
    await redis.set(key, 'x');
    const wrongType = await rejection(() => redis.hget(key, 'f'));
    expect(replyCode(wrongType)).toBe('WRONGTYPE');
    expect(classifyRedisError(wrongType)).toMatchObject({ code: 'redis_wrongtype', fault: 'bug' });

    const noScript = await rejection(() => redis.evalsha('0'.repeat(40), 1, key));
    expect(replyCode(noScript)).toBe('NOSCRIPT');
    expect(classifyError(noScript)).toMatchObject({ code: 'redis_noscript', retryable: true });

    const stream = `${services.prefix}errors:stream`;
    await redis.xadd(stream, '*', 'f', 'v');
    const noGroup = await rejection(() => redis.xreadgroup('GROUP', 'nobody', 'c', 'STREAMS', stream, '>'));
    expect(replyCode(noGroup)).toBe('NOGROUP');
    await redis.xgroup('CREATE', stream, 'g', '0');
    const busyGroup = await rejection(() => redis.xgroup('CREATE', stream, 'g', '0'));
    expect(replyCode(busyGroup)).toBe('BUSYGROUP');

    const scriptError = await rejection(() => redis.eval("return redis.call('INCR', KEYS[1])", 1, key));
    expect(replyCode(scriptError)).toBe('ERR');
    expect(classifyRedisCallError(scriptError)).toMatchObject({ code: 'redis_err', fault: 'bug' });
  });

  it('is not fooled by a message that looks like a reply', () => {
    // Only an error reply has a reply code: our own errors and the runtime's never do.
    expect(replyCode(new Error('NOGROUP not really'))).toBeNull();
    expect(replyCode(new TypeError('BUSYGROUP'))).toBeNull();
    expect(classifyRedisCallError(new TypeError('READONLY'))).toMatchObject({
      code: 'unknown',
      fault: 'bug',
    });
    const failed = (() => {
      try {
        assert(false, 'LOADING');
      } catch (error) {
        return error;
      }
    })();
    expect(classifyRedisCallError(failed)).toMatchObject({ code: 'unknown', retryable: false });
  });

  it('sorts a command timeout as the connection’s only where a Redis call failed', async () => {
    const slow = connectRedis(services, { commandTimeoutMs: 50 });
    try {
      const timedOut = await rejection(() => slow.blpop(`${services.prefix}errors:empty`, 5));
      expect(classifyRedisCallError(timedOut)).toMatchObject({ code: 'redis_connection', retryable: true });
      // Outside a Redis call a bare Error is nobody's outage.
      expect(classifyError(timedOut)).toMatchObject({ code: 'unknown', retryable: false });
    } finally {
      slow.disconnect();
    }
  });

  describe('on a private redis-server', () => {
    let server: RedisServer;

    beforeAll(async () => {
      // A script running over 50 ms makes every other client's command answer BUSY.
      server = await startRedisServer(['--busy-reply-threshold', '50']);
    });

    afterAll(async () => {
      await server?.destroy();
    });

    it('sorts BUSY (a long script) as retryable', async () => {
      const runner = createRedis({ url: server.url });
      const other = createRedis({ url: server.url });
      try {
        await other.ping();
        const spinning = runner
          .eval('local t = redis.call("TIME") while true do end', 0)
          .catch((error: unknown) => error);
        let busy: unknown = null;
        while (busy === null) {
          busy = await other.ping().then(
            () => null,
            (error: unknown) => error,
          );
        }
        expect(replyCode(busy)).toBe('BUSY');
        expect(classifyRedisError(busy)).toMatchObject({ code: 'redis_busy', retryable: true });
        await other.script('KILL');
        expect(replyCode(await spinning)).not.toBeNull();
      } finally {
        runner.disconnect();
        other.disconnect();
      }
    });

    it('sorts a stopped server as the connection’s, with and without the offline queue', async () => {
      const noQueue = createRedis({ url: server.url, offlineQueue: false });
      const queued = createRedis({ url: server.url });
      // Without the offline queue a command before the connection is ready fails: wait for it.
      if (noQueue.status !== 'ready') await new Promise((resolve) => noQueue.once('ready', resolve));
      await Promise.all([noQueue.ping(), queued.ping()]);
      await server.kill();
      try {
        const unwritable = await rejection(async () => {
          for (;;) await noQueue.ping();
        });
        expect(classifyRedisCallError(unwritable)).toMatchObject({
          code: 'redis_connection',
          retryable: true,
        });
        const gaveUp = await rejection(() => queued.ping());
        expect((gaveUp as Error).name).toBe('MaxRetriesPerRequestError');
        expect(classifyRedisError(gaveUp)).toMatchObject({ code: 'redis_connection', retryable: true });
      } finally {
        noQueue.disconnect();
        queued.disconnect();
        await server.start();
      }
    });
  });
});

describe('our own errors', () => {
  it('keeps their code, and a wrapper takes its cause’s class', async () => {
    expect(classifyError(new RetryableError('deadline', 'late'))).toEqual({
      code: 'deadline',
      fault: 'environment',
      retryable: true,
    });
    expect(classifyError(new NonRetryableError('pg_data', 'bad'))).toMatchObject({ retryable: false });
    const division = await rejection(() => services.database.sql`select 1 / 0`);
    const wrapped = new Error('archive failed', { cause: division });
    expect(classifyError(wrapped)).toMatchObject({ code: 'pg_data' });
  });
});
