// Proves a lock-holding chain worker started while Postgres does not answer (its connection stalled,
// then refused by a connect timeout) waits the outage out and runs its rounds once Postgres answers,
// instead of exiting (chaos seed 5 with --chain: the liquidator, restarted during a Postgres cut, exited
// with ECONNRESET from taking its lock). Real Postgres behind a TCP proxy the test stalls.
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { baseDatabaseUrl } from '../../test/support/env.ts';
import { startTcpProxy } from '../../test/support/tcp-proxy.ts';
import { createDatabase } from '../db/client.ts';
import { createSleeper } from '../sleeper.ts';
import { runLockedLoop } from './locked-loop.ts';

const base = new URL(baseDatabaseUrl());
const proxy = await startTcpProxy(Number(base.port || 5432), base.hostname);
const url = new URL(base);
url.port = String(proxy.port);
const database = createDatabase({
  url: url.toString(),
  poolMax: 2,
  connectTimeoutS: 1,
  applicationName: 'locked-loop-test',
});

afterAll(async () => {
  proxy.resume();
  await database.close();
  await proxy.close();
});

describe('runLockedLoop', () => {
  it('waits out an unreachable Postgres while taking the lock, then runs its rounds', async () => {
    proxy.stall();
    let warned!: () => void;
    const warnedOnce = new Promise<void>((resolve) => {
      warned = resolve;
    });
    const logger = pino({ level: 'warn' }, { write: () => warned() });
    let rounds = 0;
    let stopping = false;
    const { sleep, wake } = createSleeper();
    let ranRound!: () => void;
    const ran = new Promise<void>((resolve) => {
      ranRound = resolve;
    });
    const loop = runLockedLoop({
      sql: database.sql,
      lock: 7_431_199,
      chainId: 1_000_000 + process.pid,
      holder: 'test worker',
      round: async () => {
        rounds++;
        ranRound();
      },
      stopping: () => stopping,
      sleep,
      pollIntervalMs: 50,
      logger,
    });
    // The first attempt failed (the connect timeout): without the fix the loop has rejected by now.
    await Promise.race([warnedOnce, loop]);
    proxy.resume();
    await Promise.race([ran, loop]);
    stopping = true;
    wake();
    await loop;
    expect(rounds).toBeGreaterThan(0);
  });
});
