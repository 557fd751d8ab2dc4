/** The ledger writer's HTTP surface: GET /metrics (Prometheus) and GET /healthz. */
import { Hono } from 'hono';
import type { LedgerWriterMetrics } from './metrics.ts';
import type { LedgerWriter } from './writer.ts';

export function createLedgerWriterApp(deps: { writer: LedgerWriter; metrics: LedgerWriterMetrics }) {
  const app = new Hono();
  app.onError((_error, c) => c.json({ error: 'internal' }, 500));
  app.notFound((c) => c.json({ error: 'not_found' }, 404));
  app.get('/metrics', async (c) => {
    c.header('content-type', deps.metrics.registry.contentType);
    return c.body(await deps.metrics.registry.metrics());
  });
  // Healthy while consuming; 'retrying' (Postgres down) is still alive and loses nothing, so it is
  // reported, not failed — alert on credana_ledger_lag_ms instead.
  app.get('/healthz', (c) => {
    const { state, lagMs } = deps.writer;
    const ok = state === 'running' || state === 'retrying';
    return c.json({ ok, state, lagMs }, ok ? 200 : 503);
  });
  return app;
}
