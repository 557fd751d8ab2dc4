// Proves the projection sync resumes where it left off: a batch that fails before its commit leaves neither rows nor progress, a new worker continues after the last committed batch, and a real worker process killed with SIGKILL and restarted converges on the financial database's truth.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisEnv, setUpServices, type TestServices } from '../../test/support/db.ts';
import { createSupabaseTestDatabase, type SupabaseTestDatabase, signUp, waitFor } from '../tests/harness.ts';
import { defaultSyncLimits } from './limits.ts';
import { createSyncMetrics } from './metrics.ts';
import { createProjectionSync } from './projection-sync.ts';

let services: TestServices;
let sb: SupabaseTestDatabase;
let syncSql: postgres.Sql;
const silent = { info() {}, warn() {}, error() {} };

/** Users present in both databases, each with unsettled spend equal to its index × 100 cents. */
async function users(count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 1; i <= count; i++) {
    const id = await signUp(sb.sql, { id: randomUUID() });
    await services.database
      .sql`insert into users (id, credit_limit_cents, daily_limit_cents) values (${id}, 100000, 50000)`;
    await services.database
      .sql`insert into credit_accounts (user_id, unsettled_cents) values (${id}, ${i * 100})`;
    ids.push(id);
  }
  return ids;
}

async function projected(ids: string[]): Promise<Map<string, string>> {
  const rows = await sb.sql<{ user_id: string; unsettled_cents: string }[]>`
    select user_id, unsettled_cents::text from public.account_summaries where user_id = any(${sb.sql.array(ids)}::uuid[])`;
  return new Map(rows.map((r) => [r.user_id, r.unsettled_cents]));
}

async function cursor() {
  const [row] =
    await sb.sql`select position::text, pass_upper::text, pass_after_user from credana_sync.cursors where name = 'projection'`;
  return row;
}

function workerSync(batch: number, beforeCommit?: () => void) {
  return createProjectionSync({
    supabase: syncSql,
    financial: services.sqlFor('credana_supabase_sync'),
    limits: { ...defaultSyncLimits, projectionBatchMax: batch },
    metrics: createSyncMetrics(),
    logger: silent,
    ...(beforeCommit === undefined ? {} : { beforeCommit }),
  });
}

beforeAll(async () => {
  services = await setUpServices();
  sb = await createSupabaseTestDatabase();
  syncSql = postgres(sb.url, { max: 3, onnotice: () => {} });
});

afterAll(async () => {
  await syncSql?.end({ timeout: 5 });
  await sb?.close();
  await services?.close();
});

describe('crash and resume', () => {
  it('commits a batch and its progress together, and a new worker continues after the last committed batch', async () => {
    const ids = await users(5);
    let calls = 0;
    const crashing = workerSync(2, () => {
      calls++;
      if (calls === 2) throw new Error('crash before the second commit');
    });
    const first = await crashing.runBatch();
    expect(first).toEqual({ mode: 'incremental', users: 2, passDone: false });
    const afterFirst = await cursor();
    await expect(crashing.runBatch()).rejects.toThrow(/crash before the second commit/);
    // The failed batch left nothing: two users projected, progress unchanged.
    expect((await projected(ids)).size).toBe(2);
    expect(await cursor()).toEqual(afterFirst);
    expect(afterFirst?.['pass_upper']).not.toBeNull();

    const fresh = workerSync(2);
    expect(await fresh.runBatch()).toEqual({ mode: 'incremental', users: 2, passDone: false });
    expect((await projected(ids)).size).toBe(4);
    expect(await fresh.runBatch()).toEqual({ mode: 'incremental', users: 1, passDone: true });
    const done = await projected(ids);
    expect(ids.map((id) => done.get(id))).toEqual(['100', '200', '300', '400', '500']);
    const final = await cursor();
    expect(final?.['pass_upper']).toBeNull();
    expect(final?.['position']).toBe(afterFirst?.['pass_upper']);
  });

  it('converges after the worker process is killed with SIGKILL mid-stream and restarted', async () => {
    const env = {
      PATH: process.env['PATH'] ?? '',
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: services.urlFor('credana_supabase_sync'),
      SUPABASE_DB_URL: sb.url,
      SUPABASE_SYNC_METRICS_PORT: '0',
      ...redisEnv(services),
      REDIS_KEY_PREFIX: services.prefix,
    };
    const start = () => startWorker(env);
    const ids = await users(3);
    let worker = await start();
    await waitFor(async () => ((await projected(ids)).size === 3 ? true : undefined), 5_000, 20);
    // More changes arrive; the worker dies at once (no shutdown), and more changes arrive while it is down.
    await services.database
      .sql`update credit_accounts set unsettled_cents = unsettled_cents + 1, updated_at = now()
      where user_id = any(${services.database.sql.array(ids)}::uuid[])`;
    worker.kill('SIGKILL');
    await new Promise((resolve) => worker.once('exit', resolve));
    const later = await users(2);
    worker = await start();
    try {
      const all = [...ids, ...later];
      const expected = ['101', '201', '301', '100', '200'];
      await waitFor(
        async () => {
          const now = await projected(all);
          return all.every((id, i) => now.get(id) === expected[i]) ? true : undefined;
        },
        5_000,
        20,
      );
    } finally {
      worker.kill('SIGTERM');
      await new Promise((resolve) => worker.once('exit', resolve));
    }
  });
});

async function startWorker(env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.resolve('supabase/sync/main.ts')], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`worker exited early: ${out.slice(-2_000)}`);
      return out.includes('supabase-sync ready') ? true : undefined;
    },
    30_000,
    50,
  );
  return child;
}
