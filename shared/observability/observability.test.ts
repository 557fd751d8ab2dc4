// Proves the one logger factory and the one metrics setup: a log line carries the service's name and never the secrets, keys or card data handed to it (top level or one level down) while block numbers stay readable; a service registry exports the default process metrics (event-loop lag, GC, memory) with a `service` label; the internal app answers /metrics, /healthz and /readyz (503 when not ready) and hides /metrics when metrics are disabled; a dependency probe that hangs reports down within PROBE_TIMEOUT_MS.
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  createInternalApp,
  createLogger,
  createProbes,
  createServiceRegistry,
  PROBE_TIMEOUT_MS,
} from './index.ts';

function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { stream, lines };
}

describe('createLogger', () => {
  it('names the service on every line and redacts secrets, keys and card data', () => {
    const { stream, lines } = capture();
    const logger = createLogger('info', 'settlement', stream);
    logger.info(
      {
        privateKey: '0xabc123secretkey',
        token: 'tok_live_secret',
        config: { password: 'hunter2', INTERNAL_API_TOKEN: 'kept-name-only' },
        card: { number: '4242424242424242', cvc: '123', last4: '4242' },
        headers: { authorization: 'Bearer abc', 'stripe-signature': 't=1,v1=deadbeef' },
        number: 1234,
      },
      'sent',
    );
    logger.debug({ secret: 'not even written' }, 'below the level');
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
    expect(line['service']).toBe('settlement');
    expect(line['pid']).toBe(process.pid);
    for (const value of [
      '0xabc123secretkey',
      'tok_live_secret',
      'hunter2',
      '4242424242424242',
      'Bearer abc',
      'deadbeef',
    ])
      expect(lines[0]).not.toContain(value);
    expect(line['privateKey']).toBe('[redacted]');
    expect((line['card'] as Record<string, unknown>)['last4']).toBe('4242');
    // A block number at the top level is not card data.
    expect(line['number']).toBe(1234);
  });
});

describe('createServiceRegistry', () => {
  it('exports default process metrics, each with the service label', async () => {
    const registry = createServiceRegistry('liquidator');
    const text = await registry.metrics();
    expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds\{service="liquidator"\} [\d.e-]+$/m);
    expect(text).toMatch(/^process_resident_memory_bytes\{service="liquidator"\} \d+$/m);
    expect(text).toContain('# TYPE nodejs_gc_duration_seconds histogram');
    // Registries are per process (or per test), never shared.
    expect(await createServiceRegistry('indexer').metrics()).not.toContain('service="liquidator"');
  });
});

describe('createInternalApp and createProbes', () => {
  it('serves metrics and health; /readyz is 503 with what is down; disabled metrics answer 404', async () => {
    const registry = createServiceRegistry('withdrawals');
    const probe = createProbes(registry, {
      postgres: async () => true,
      chain: () => Promise.reject(new Error('ECONNREFUSED')),
      hung: () => new Promise(() => {}),
    });
    const readiness = async () => {
      const status = await probe();
      return { ready: Object.values(status).every(Boolean), ...status };
    };
    const app = createInternalApp({ registry, readiness, logger: createLogger('silent', 'withdrawals') });
    expect((await app.request('/healthz')).status).toBe(200);
    const startedAt = Date.now();
    const ready = await app.request('/readyz');
    expect(Date.now() - startedAt).toBeLessThan(PROBE_TIMEOUT_MS * 3);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ ready: false, postgres: true, chain: false, hung: false });
    const metrics = await (await app.request('/metrics')).text();
    expect(metrics).toContain('credana_dependency_up{dependency="postgres",service="withdrawals"} 1');
    expect(metrics).toContain('credana_dependency_up{dependency="chain",service="withdrawals"} 0');
    const closed = createInternalApp({
      registry,
      readiness,
      logger: createLogger('silent', 'withdrawals'),
      metricsEnabled: false,
    });
    expect((await closed.request('/metrics')).status).toBe(404);
    expect((await closed.request('/healthz')).status).toBe(200);
  });
});
