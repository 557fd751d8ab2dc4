/**
 * Scripts run by SHA on a private redis-server (its script cache is flushed here, which the shared
 * Redis's other users must not see): the text travels once, then only the SHA — also with
 * auto-pipelining, which ioredis's own script commands turned into a full EVAL on every call.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisServer, startRedisServer } from '../../test/support/processes.ts';
import { createRedis, type Redis } from './client.ts';
import { loadScripts, luaScript, runScript } from './script.ts';

const INCR_BY = luaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])");

let server: RedisServer;
let redis: Redis;
let monitor: Redis;
const seen: string[] = [];

beforeAll(async () => {
  server = await startRedisServer();
  redis = createRedis({ url: server.url, autoPipelining: true });
  monitor = await createRedis({ url: server.url }).monitor();
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (!source.includes('lua')) seen.push(String(args[0]).toLowerCase());
  });
});

afterAll(async () => {
  monitor.disconnect();
  redis.disconnect();
  await server.destroy();
});

async function commandsDuring(work: () => Promise<unknown>): Promise<string[]> {
  // MONITOR reports asynchronously: let the reports of earlier commands arrive before counting.
  await new Promise((resolve) => setTimeout(resolve, 100));
  seen.length = 0;
  await work();
  await new Promise((resolve) => setTimeout(resolve, 100));
  return seen.filter((name) => name !== 'info' && name !== 'client');
}

describe('runScript', () => {
  it('sends the text only when Redis does not have the script, then only its SHA', async () => {
    const first = await commandsDuring(() => runScript(redis, INCR_BY, ['k'], [2]));
    expect(first).toEqual(['evalsha', 'eval']);
    const next = await commandsDuring(() =>
      Promise.all([1, 2, 3].map((n) => runScript<number>(redis, INCR_BY, ['k'], [n]))),
    );
    expect(next).toEqual(['evalsha', 'evalsha', 'evalsha']);
    expect(await redis.get('k')).toBe('8');
  });

  it('recovers when the script cache is emptied (a restarted Redis)', async () => {
    await redis.script('FLUSH');
    expect(await runScript<number>(redis, INCR_BY, ['k'], [1])).toBe(9);
    expect(await commandsDuring(() => runScript(redis, INCR_BY, ['k'], [1]))).toEqual(['evalsha']);
  });

  it('runs a preloaded script by its SHA from the first call', async () => {
    await redis.script('FLUSH');
    await loadScripts(redis, [INCR_BY]);
    expect(await commandsDuring(() => runScript(redis, INCR_BY, ['k'], [1]))).toEqual(['evalsha']);
    expect(await redis.get('k')).toBe('11');
  });

  it('passes script errors through', async () => {
    await expect(runScript(redis, luaScript("return redis.call('NOPE')"), ['k'], [])).rejects.toThrow(
      /Unknown Redis command|unknown command/i,
    );
  });
});
