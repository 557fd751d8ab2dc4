// Proves `npm run ops -- reconcile` on real Postgres and Redis: a dry run of the cache job reports drift injected into Redis and leaves it, the real run (with a reason) repairs it, is recorded in reconciliation_runs and audited with who and why; bad input (no reason, unknown job, flags of another job, a missing export file) is one line and exit 2 and neither runs nor audits anything; `npm run ops` wires it.
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RUNNABLE } from '../../reconciler/index.ts';
import { createReconcileMetrics } from '../../reconciler/metrics.ts';
import { openReplicaReader } from '../../shared/db/replica.ts';
import { ensureAccount } from '../../shared/redis/account.ts';
import { ACCOUNT, userKeys } from '../../shared/redis/keys.ts';
import { redisEnv, setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedUser } from '../../test/support/fixtures.ts';
import { testConfig } from '../../test/support/hot-path.ts';
import { runScript } from '../../test/support/processes.ts';
import { JOBS, reconcileCommand } from './reconcile.ts';

let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
});

afterAll(async () => {
  await services?.close();
});

async function ops(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const command = reconcileCommand({
    defaultActor: 'alice-ops',
    services: async () => ({
      // An operator's command: the owner's connection, not a service role.
      config: testConfig(services, {}, 'superuser'),
      database: services.database,
      redis: services.redis,
      logger: pino({ level: 'silent' }),
      metrics: createReconcileMetrics(),
      replica: openReplicaReader({ READ_REPLICA_LAG_BYTES_MAX: 0 }, services.database.sql, {
        name: 'ops-test',
        logger: pino({ level: 'silent' }),
      }).reader,
      now: Date.now,
      close: async () => {},
    }),
  });
  const code = await command.run(args, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

const counts = async () => {
  const [row] = await services.database.sql<{ audits: number; runs: number }[]>`
    select (select count(*)::int from audit_log) as audits, (select count(*)::int from reconciliation_runs) as runs`;
  return row;
};

describe('reconcile', () => {
  it('knows exactly the jobs the reconciliation runner runs', () => {
    expect(JOBS).toEqual(RUNNABLE);
  });

  it('reports drift in a dry run, repairs it in a real run, records and audits the run', async () => {
    const { redis, prefix } = services;
    const sql = services.database.sql;
    const user = await seedUser(sql, { unsettledCents: 700n });
    await ensureAccount(redis, sql, prefix, user.userId);
    const account = userKeys(prefix, user.userId).account;
    await redis.hset(account, ACCOUNT.unsettledCents, '99999');

    const dry = await ops('cache', '--dry-run');
    expect({ code: dry.code, err: dry.err }).toEqual({ code: 0, err: [] });
    expect(dry.out[0]).toMatch(
      /^reconcile cache \(dry run\): findings \(run \d+\); checked 1, findings 1, repairs 0$/,
    );
    expect(JSON.parse(dry.out[1] as string)).toMatchObject({ kind: 'cache_drift', userId: user.userId });
    expect(await redis.hget(account, ACCOUNT.unsettledCents)).toBe('99999');
    const [audit0] = await sql`select count(*)::int as n from audit_log where action = 'ops.reconcile_run'`;
    expect(audit0?.['n']).toBe(0);

    const real = await ops('cache', '--reason', 'drift alert on shard 3', '--actor', 'bob-ops');
    expect({ code: real.code, err: real.err }).toEqual({ code: 0, err: [] });
    expect(real.out[0]).toMatch(/^reconcile cache: findings \(run \d+\); checked 1, findings 1, repairs 1$/);
    expect(await redis.hget(account, ACCOUNT.unsettledCents)).toBe('700');
    const runId = /\(run (\d+)\)/.exec(real.out[0] as string)?.[1];
    const [run] =
      await sql`select job, status, repairs from reconciliation_runs where id = ${runId as string}`;
    expect(run).toEqual({ job: 'cache', status: 'findings', repairs: 1 });
    const audits = await sql<{ actor: string; entity_id: string; data: Record<string, unknown> }[]>`
      select actor, entity_id, data from audit_log where action = 'ops.reconcile_run'`;
    expect(audits).toEqual([
      { actor: 'bob-ops', entity_id: 'cache', data: { reason: 'drift alert on shard 3', dryRun: false } },
    ]);

    // The seeded $7.00 unsettled has no ledger entries behind it: the books job says so (exit 0: it ran).
    const books = await ops('books', '--reason', 'after the repair');
    expect(books.code).toBe(0);
    expect(books.out[0]).toMatch(
      /^reconcile books: findings \(run \d+\); checked \d+, findings 1, repairs 0$/,
    );
    expect(JSON.parse(books.out[1] as string)).toEqual({
      kind: 'balance_mismatch',
      userId: user.userId,
      account: 'user_unsettled',
      balanceCents: '700',
      ledgerCents: '0',
    });
  });

  it('answers bad input with one line and exit 2, running and auditing nothing', async () => {
    const before = await counts();
    const cases: [string[], RegExp][] = [
      [['books'], /--reason "\.\.\." is required/],
      [['books', '--reason', '  '], /--reason "\.\.\." is required/],
      [
        ['everything', '--reason', 'x'],
        /no job "everything" \(jobs: cache, holds, books, chain, stripe, anchors, analytics, partitions, summary, hold-sweep\)/,
      ],
      [[], /expects one job, got 0/],
      [['books', '--dry-run'], /--dry-run applies to cache and holds only/],
      [
        ['holds', '--transactions', 'x.json', '--reason', 'x'],
        /--transactions applies to the stripe job only/,
      ],
      [['stripe', '--transactions', '/nonexistent/tx.json', '--reason', 'x'], /--transactions: no file/],
      [
        ['stripe', '--transactions', import.meta.filename, '--from', '2026-01-02', '--reason', 'x'],
        /--from and --to go together/,
      ],
      [
        [
          'stripe',
          '--transactions',
          import.meta.filename,
          '--from',
          '2026-01-02',
          '--to',
          '2026-01-01',
          '--reason',
          'x',
        ],
        /--to must be after --from/,
      ],
      [['books', '--reason', 'x', '--actor', ''], /--actor must be 1\.\.100 characters/],
    ];
    for (const [args, message] of cases) {
      const result = await ops(...args);
      expect({ args, code: result.code, lines: result.err.length, out: result.out }).toEqual({
        args,
        code: 2,
        lines: 1,
        out: [],
      });
      expect(result.err[0]).toMatch(message);
    }
    expect(await counts()).toEqual(before);
  });

  it('runs from npm run ops (scripts/ops.ts as a child process)', async () => {
    const run = await runScript(
      'scripts/ops.ts',
      ['reconcile', 'books', '--reason', 'weekly check', '--actor', 'carol-ops'],
      {
        PATH: process.env['PATH'] ?? '',
        NODE_ENV: 'test',
        LOG_LEVEL: 'info',
        DATABASE_URL: services.databaseUrl,
        ...redisEnv(services),
        REDIS_KEY_PREFIX: services.prefix,
      },
    );
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    // Only the command's own lines: the runner's JSON logs stay out of stdout.
    const lines = run.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^reconcile books: findings \(run \d+\); checked \d+, findings 1, repairs 0$/);
    expect(lines.slice(1)).toEqual([expect.stringMatching(/^ {2}\{"kind":"balance_mismatch"/)]);
    const [audit] = await services.database.sql`
      select actor, data->>'reason' as reason from audit_log where action = 'ops.reconcile_run' order by id desc limit 1`;
    expect(audit).toEqual({ actor: 'carol-ops', reason: 'weekly check' });
  }, 120_000); // a child process under tsx: ~15 s on the shared 2-core machine
});
