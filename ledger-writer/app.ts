/**
 * The ledger writer's HTTP surface: GET /metrics (Prometheus), GET /healthz (liveness) and GET /readyz
 * (readiness: Redis and Postgres both answer — the writer needs both to do its job).
 *
 * `metrics: 'open'` is the internal listener (LEDGER_WRITER_PORT with QUEUE_DRIVER=redis, or
 * LEDGER_WRITER_METRICS_PORT with QUEUE_DRIVER=qstash). `metrics: { token }` is the public port QStash
 * delivers to: /metrics there answers 404 unless `Authorization: Bearer <METRICS_TOKEN>` is presented.
 */
import { createApp, HttpError } from '../shared/http/app.ts';
import type { Logger } from '../shared/observability/logger.ts';
import { metricsTokenPresented } from '../shared/observability/metrics-access.ts';
import type { Readiness } from '../shared/observability/readiness.ts';
import type { LedgerWriterMetrics } from './metrics.ts';
import type { LedgerWriter } from './writer.ts';

export interface LedgerWriterAppDeps {
  writer: LedgerWriter;
  metrics: LedgerWriterMetrics;
  readiness: Readiness;
  access: 'open' | { token: string | undefined };
  /** Where an unexpected error is logged, with its request id (shared/http/app.ts). */
  logger: Pick<Logger, 'error' | 'warn'>;
}

export function createLedgerWriterApp(deps: LedgerWriterAppDeps) {
  const app = createApp({ logger: deps.logger });
  app.get('/metrics', async (c) => {
    if (deps.access !== 'open' && !metricsTokenPresented(c.req.header('authorization'), deps.access.token))
      throw new HttpError('not_found');
    c.header('content-type', deps.metrics.registry.contentType);
    return c.body(await deps.metrics.registry.metrics());
  });
  // Alive while consuming; 'retrying' (Postgres down) is still alive and loses nothing, so it is
  // reported, not failed — restarting would not help; /readyz and credana_ledger_lag_ms say it.
  app.get('/healthz', (c) => {
    const { state, lagMs } = deps.writer;
    const ok = state === 'running' || state === 'retrying';
    return c.json({ ok, state, lagMs }, ok ? 200 : 503);
  });
  // Ready only while both Redis (the outbox it drains) and Postgres (the ledger it writes) answer.
  app.get('/readyz', async (c) => {
    const status = await deps.readiness();
    return c.json({ ...status, state: deps.writer.state }, status.ready ? 200 : 503);
  });
  return app;
}
