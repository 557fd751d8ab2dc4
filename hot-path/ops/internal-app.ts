/**
 * The hot path's internal listener (HOT_PATH_METRICS_PORT on METRICS_HOST): GET /metrics, /healthz and
 * /readyz, for Prometheus and the load balancer's health checks — never the public webhook port, where
 * /metrics answers 404 unless METRICS_TOKEN is presented (app.ts).
 */
import { Hono } from 'hono';
import type { Metrics } from './metrics.ts';
import type { Readiness } from './readiness.ts';

export function createInternalApp(deps: { metrics: Pick<Metrics, 'registry'>; readiness: Readiness }) {
  const app = new Hono();
  app.onError((_error, c) => c.json({ error: 'internal' }, 500));
  app.notFound((c) => c.json({ error: 'not_found' }, 404));
  app.get('/metrics', async (c) => {
    c.header('Content-Type', deps.metrics.registry.contentType);
    return c.body(await deps.metrics.registry.metrics());
  });
  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/readyz', async (c) => {
    const status = await deps.readiness();
    return c.json(status, status.ready ? 200 : 503);
  });
  return app;
}
