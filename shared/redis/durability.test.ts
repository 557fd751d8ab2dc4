// Proves the Redis durability check refuses, in production, every private redis-server started without AOF, with a weaker appendfsync than required, or with an evicting maxmemory-policy, accepts a durable one, falls back to INFO when CONFIG is renamed away (saying what it cannot verify), and in development runs on a bad Redis with exactly one warn-level log line and a 0 gauge.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { type RedisServer, startRedisServer } from '../../test/support/processes.ts';
import type { Config } from '../config.ts';
import { createRedis } from './client.ts';
import { checkRedisDurability, type DurabilityVerdict, durabilityGauge } from './durability.ts';

const servers: RedisServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => server.destroy()));
});

/** Log lines as pino writes them (JSON), so the test sees the level and message operators see. */
function capturedLogger() {
  const lines: { level: number; msg: string; problems?: string[]; unverified?: string[] }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

async function check(
  args: string[],
  nodeEnv: Config['NODE_ENV'],
  required: Config['REDIS_REQUIRED_APPENDFSYNC'] = 'always',
): Promise<DurabilityVerdict & { lines: ReturnType<typeof capturedLogger>['lines'] }> {
  const server = await startRedisServer(args);
  servers.push(server);
  const redis = createRedis({ url: server.url });
  const { logger, lines } = capturedLogger();
  try {
    const verdict = await checkRedisDurability({ redis, required, nodeEnv, logger });
    // pino writes asynchronously to a plain stream: let it flush.
    await new Promise((resolve) => setImmediate(resolve));
    return { ...verdict, lines };
  } finally {
    redis.disconnect();
  }
}

const AOF_ALWAYS = ['--appendonly', 'yes', '--appendfsync', 'always'];
const AOF_EVERYSEC = ['--appendonly', 'yes', '--appendfsync', 'everysec'];

describe('checkRedisDurability in production', () => {
  it('refuses a Redis without AOF', async () => {
    const verdict = await check(['--appendonly', 'no'], 'production');
    expect(verdict.refuse).toBe(true);
    expect(verdict.ok).toBe(false);
    expect(verdict.report?.source).toBe('CONFIG GET');
    expect(verdict.line).toMatch(/^redis: REDIS_URL is not durable enough .*AOF is off \(appendonly no\)/);
    expect(verdict.line).not.toContain('\n');
  });

  it('refuses AOF with appendfsync everysec when always is required, and accepts it when everysec is', async () => {
    const strict = await check(AOF_EVERYSEC, 'production', 'always');
    expect(strict.refuse).toBe(true);
    expect(strict.line).toContain('appendfsync is everysec, weaker than REDIS_REQUIRED_APPENDFSYNC=always');
    const relaxed = await check(AOF_EVERYSEC, 'production', 'everysec');
    expect(relaxed).toMatchObject({ ok: true, refuse: false, line: null });
  });

  it('refuses an evicting maxmemory-policy even with AOF always', async () => {
    const verdict = await check([...AOF_ALWAYS, '--maxmemory-policy', 'allkeys-lru'], 'production');
    expect(verdict.refuse).toBe(true);
    expect(verdict.report?.problems).toEqual([
      'maxmemory-policy is allkeys-lru, not noeviction, so Redis may evict holds and outbox entries',
    ]);
  });

  it('accepts AOF always with noeviction, silently', async () => {
    const verdict = await check([...AOF_ALWAYS, '--maxmemory-policy', 'noeviction'], 'production');
    expect(verdict).toMatchObject({ ok: true, refuse: false, line: null });
    expect(verdict.report).toEqual({ source: 'CONFIG GET', problems: [], unverified: [] });
    expect(verdict.lines).toEqual([]);
  });

  it('reads INFO when CONFIG is renamed away, and says appendfsync cannot be verified', async () => {
    const durable = await check([...AOF_ALWAYS, '--rename-command', 'CONFIG', '""'], 'production');
    expect(durable.report?.source).toBe('INFO');
    expect(durable.ok).toBe(true);
    expect(durable.refuse).toBe(false);
    expect(durable.report?.unverified).toEqual([
      'appendfsync (CONFIG GET is refused and INFO does not report it)',
    ]);
    expect(durable.lines).toHaveLength(1);
    expect(durable.lines[0]?.level).toBe(40);
    expect(durable.lines[0]?.msg).toContain('not verified: appendfsync');

    const volatile = await check(['--appendonly', 'no', '--rename-command', 'CONFIG', '""'], 'production');
    expect(volatile.report?.source).toBe('INFO');
    expect(volatile.refuse).toBe(true);
    expect(volatile.line).toContain('AOF is off');
  });

  it('refuses when Redis does not answer', async () => {
    const server = await startRedisServer();
    servers.push(server);
    await server.kill();
    const redis = createRedis({ url: server.url, commandTimeoutMs: 500 });
    try {
      const { logger } = capturedLogger();
      const verdict = await checkRedisDurability({
        redis,
        required: 'always',
        nodeEnv: 'production',
        logger,
      });
      expect(verdict).toMatchObject({ ok: false, refuse: true, report: null });
      expect(verdict.line).toMatch(/^redis: REDIS_URL did not answer the durability check/);
    } finally {
      redis.disconnect();
    }
  });
});

describe('checkRedisDurability in development and test', () => {
  it.each(['development', 'test'] as const)(
    'runs on a Redis without AOF and with allkeys-lru under NODE_ENV=%s, with one warn line',
    async (nodeEnv) => {
      const verdict = await check(['--appendonly', 'no', '--maxmemory-policy', 'allkeys-lru'], nodeEnv);
      expect(verdict.refuse).toBe(false);
      expect(verdict.ok).toBe(false);
      expect(verdict.lines).toHaveLength(1);
      expect(verdict.lines[0]?.level).toBe(40);
      expect(verdict.lines[0]?.msg).toBe(verdict.line);
      expect(verdict.lines[0]?.problems).toHaveLength(2);

      const registry = new Registry();
      durabilityGauge(registry, verdict.ok);
      expect(await registry.metrics()).toContain('credana_redis_durability_ok 0');
    },
  );

  it('sets the gauge to 1 for a durable Redis', async () => {
    const verdict = await check(AOF_ALWAYS, 'development');
    const registry = new Registry();
    durabilityGauge(registry, verdict.ok);
    expect(await registry.metrics()).toContain('credana_redis_durability_ok 1');
  });
});
