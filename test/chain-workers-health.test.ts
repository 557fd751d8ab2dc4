// Proves the chain workers' internal listeners as real processes on a real chain and Postgres: the settlement worker is ready only while it holds its chain's session lock (a second worker exits, lock taken), exports its metrics with the default process metrics and a service label, and exits when its lock's Postgres backend is terminated instead of running rounds without the lock; the liquidator is not ready while its chain RPC does not answer and ready once it does; the audit anchorer is ready while it holds its lock; the withdrawal service answers /metrics on its public port only with METRICS_TOKEN and openly on its internal listener.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ChainHarness,
  localAccount,
  ROLES,
  seedAssets,
  startChainHarness,
} from '../scripts/chain/harness.ts';
import {
  type ChildService,
  spawnLiquidator,
  spawnService,
  spawnSettlement,
} from '../scripts/chain/testing.ts';
import { writeContractsFile } from '../shared/chain/contracts/index.ts';
import { LOCK_SETTLEMENT_SESSION } from '../shared/db/locks.ts';
import { redisEnv, type ServiceRole, setUpServices, type TestServices } from './support/db.ts';
import { freePort } from './support/processes.ts';

let services: TestServices;
let chain: ChainHarness;
let contractsFile: string;
const running: ChildService[] = [];
const METRICS_TOKEN = 'a-metrics-token-of-this-test-only-0123456789';

beforeAll(async () => {
  [services, chain] = await Promise.all([
    setUpServices(),
    // With the audit anchor contract, for the anchorer.
    startChainHarness({ anchorer: localAccount(ROLES.anchorer).address }),
  ]);
  await seedAssets(services.database.sql, chain.contracts);
  contractsFile = join(mkdtempSync(join(tmpdir(), 'credana-workers-health-')), 'contracts.json');
  writeContractsFile(contractsFile, chain.contracts);
}, 120_000);

afterAll(async () => {
  await Promise.all(running.map((child) => child.kill('SIGKILL')));
  await chain?.stop();
  await services?.close();
});

function baseEnv(role: ServiceRole, extra: Record<string, string>): Record<string, string> {
  return {
    PATH: process.env['PATH'] ?? '',
    DATABASE_URL: services.urlFor(role),
    ...redisEnv(services),
    REDIS_KEY_PREFIX: services.prefix,
    CHAIN_RPC_URL: chain.url,
    CHAIN_ID: String(chain.contracts.chainId),
    CONTRACTS_FILE: contractsFile,
    ...extra,
  };
}

function start(spawned: ChildService): ChildService {
  running.push(spawned);
  return spawned;
}

async function waitFor<T>(what: string, check: () => Promise<T | null>, timeoutMs = 60_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => null);
    if (value !== null) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The internal listener's base URL, from the `<service> metrics on http://…` line. */
function listenerOf(child: ChildService, service: string): Promise<string> {
  return waitFor(`${service}'s metrics line`, async () => {
    if (child.child.exitCode !== null) throw new Error(`${service} exited: ${child.output()}`);
    return new RegExp(`${service} metrics on (http://\\S+)`).exec(child.output())?.[1] ?? null;
  });
}

async function readyz(base: string): Promise<{ status: number; body: Record<string, boolean> }> {
  const res = await fetch(`${base}/readyz`);
  return { status: res.status, body: (await res.json()) as Record<string, boolean> };
}

describe('chain workers: health, readiness and metrics', () => {
  it('settlement: ready only while it holds the session lock; a second worker exits; a lost lock stops it', async () => {
    const env = baseEnv('credana_settlement', {
      SETTLEMENT_METRICS_PORT: '0',
      SETTLER_PRIVATE_KEY: localAccount(ROLES.settler).privateKey,
    });
    const worker = start(spawnSettlement(env, ['--poll-interval-ms', '50']));
    const base = await listenerOf(worker, 'settlement');
    const ready = await waitFor('settlement /readyz 200', async () => {
      const answer = await readyz(base);
      return answer.status === 200 ? answer : null;
    });
    expect(ready.body).toEqual({ ready: true, postgres: true, chain: true, lock: true });
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('credana_session_lock_held{service="settlement"} 1');
    expect(metrics).toContain('credana_dependency_up{dependency="chain",service="settlement"} 1');
    expect(metrics).toContain('settlement_fee_above_cap{service="settlement"} 0');
    expect(metrics).toMatch(/nodejs_eventloop_lag_seconds\{service="settlement"\} \d/);
    expect(metrics).toContain('# TYPE nodejs_gc_duration_seconds histogram');

    // One settlement worker per chain: a second one finds the lock taken and exits non-zero.
    const second = start(spawnSettlement(env, ['--poll-interval-ms', '50']));
    expect(await second.exited).toBe(1);
    expect(second.output()).toContain('another settlement worker holds chain');

    // The lock's connection ends (as in a Postgres restart): the worker stops rather than settle without it.
    // This file's database only: another test run on this server holds the same key in its own database.
    const terminated = await services.database.sql<{ ok: boolean }[]>`
      select pg_terminate_backend(pid) as ok from pg_locks
      where locktype = 'advisory' and classid = ${LOCK_SETTLEMENT_SESSION}::int::oid
        and objid = ${chain.contracts.chainId}::int::oid
        and database = (select oid from pg_database where datname = current_database())`;
    expect(terminated.map((row) => row.ok)).toEqual([true]);
    const exit = await Promise.race([
      worker.exited,
      new Promise((resolve) => setTimeout(() => resolve('still running after 30 s'), 30_000)),
    ]);
    expect(exit, worker.output().slice(-3_000)).toBe(1);
    expect(worker.output()).toContain('lost its session lock');
  }, 120_000);

  it('liquidator: not ready while the chain RPC does not answer (lock held), ready once it does', async () => {
    const deadRpc = `http://127.0.0.1:${await freePort()}`;
    const env = (rpc: string) =>
      baseEnv('credana_liquidator', {
        CHAIN_RPC_URL: rpc,
        LIQUIDATOR_METRICS_PORT: '0',
        LIQUIDATOR_PRIVATE_KEY: localAccount(ROLES.liquidator).privateKey,
      });
    const blind = start(spawnLiquidator(env(deadRpc), ['--poll-interval-ms', '50']));
    const blindBase = await listenerOf(blind, 'liquidator');
    const notReady = await waitFor('the liquidator to hold its lock', async () => {
      const answer = await readyz(blindBase);
      return answer.body['lock'] === true ? answer : null;
    });
    expect(notReady).toEqual({
      status: 503,
      body: { ready: false, postgres: true, chain: false, lock: true },
    });
    await blind.kill('SIGTERM');

    const seeing = start(spawnLiquidator(env(chain.url), ['--poll-interval-ms', '50']));
    const base = await listenerOf(seeing, 'liquidator');
    const ready = await waitFor('liquidator /readyz 200', async () => {
      const answer = await readyz(base);
      return answer.status === 200 ? answer : null;
    });
    expect(ready.body).toEqual({ ready: true, postgres: true, chain: true, lock: true });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('liquidator_health_warning_accounts{service="liquidator"} 0');
    expect(metrics).toContain('credana_session_lock_held{service="liquidator"} 1');
    await seeing.kill('SIGTERM');
  }, 120_000);

  it('anchorer: ready while it holds the anchor lock, its metrics labelled', async () => {
    const anchorer = start(
      spawnService(
        'anchorer/main.ts',
        baseEnv('credana_reconciliation', {
          AUDIT_ANCHOR_METRICS_PORT: '0',
          AUDIT_ANCHOR_PRIVATE_KEY: localAccount(ROLES.anchorer).privateKey,
          AUDIT_ANCHOR_INTERVAL_S: '10',
        }),
      ),
    );
    const base = await listenerOf(anchorer, 'anchorer').catch((error: Error) => {
      throw new Error(`${error.message}: ${anchorer.output().slice(-3_000)}`);
    });
    const ready = await waitFor('anchorer /readyz 200', async () => {
      const answer = await readyz(base);
      return answer.status === 200 ? answer : null;
    });
    expect(ready.body).toEqual({ ready: true, postgres: true, chain: true, lock: true });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('credana_session_lock_held{service="anchorer"} 1');
    expect(metrics).toContain('nodejs_eventloop_lag_seconds{service="anchorer"}');
    await anchorer.kill('SIGTERM');
  }, 120_000);

  it('withdrawals: /metrics on the public port only with METRICS_TOKEN; the internal listener serves it and /readyz', async () => {
    const port = await freePort();
    const service = start(
      spawnService(
        'withdrawals/main.ts',
        baseEnv('credana_withdrawals', {
          WITHDRAWALS_PORT: String(port),
          WITHDRAWALS_METRICS_PORT: '0',
          INTERNAL_API_TOKEN: 'an-internal-token-of-this-test',
          WITHDRAWAL_SIGNER_PRIVATE_KEY: localAccount(ROLES.deployer).privateKey,
          METRICS_TOKEN,
        }),
      ),
    );
    const internal = await listenerOf(service, 'withdrawals');
    await waitFor('withdrawals ready line', async () =>
      service.output().includes('withdrawals ready on') ? true : null,
    );
    const publicBase = `http://127.0.0.1:${port}`;
    expect((await fetch(`${publicBase}/metrics`)).status).toBe(404);
    expect(
      (
        await fetch(`${publicBase}/metrics`, {
          headers: { authorization: 'Bearer not-the-token-at-all-00000000' },
        })
      ).status,
    ).toBe(404);
    // A refused request, counted by result.
    const refused = await fetch(`${publicBase}/withdrawals/approvals`, { method: 'POST', body: '{}' });
    expect(refused.status).toBe(401);
    const withToken = await fetch(`${publicBase}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(withToken.status).toBe(200);
    expect(await withToken.text()).toContain(
      'credana_withdrawal_approvals_total{result="unauthorized",service="withdrawals"} 1',
    );
    const open = await (await fetch(`${internal}/metrics`)).text();
    expect(open).toContain('credana_dependency_up{dependency="redis",service="withdrawals"} 1');
    expect(await readyz(internal)).toEqual({
      status: 200,
      body: { ready: true, postgres: true, chain: true, redis: true },
    });
    expect(await readyz(publicBase)).toEqual({
      status: 200,
      body: { ready: true, postgres: true, chain: true, redis: true },
    });
    await service.kill('SIGTERM');
  }, 120_000);
});
