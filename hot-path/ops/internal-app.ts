/**
 * The hot path's internal listener (HOT_PATH_METRICS_PORT on METRICS_HOST): GET /metrics, /healthz and
 * /readyz, for Prometheus and the load balancer's health checks — never the public webhook port, where
 * /metrics answers 404 unless METRICS_TOKEN is presented (app.ts). The same app every service's
 * internal listener serves (shared/observability/internal-app.ts).
 */
import { createInternalApp as createServiceInternalApp } from '../../shared/observability/internal-app.ts';
import type { Logger } from '../../shared/observability/logger.ts';
import type { Readiness } from '../../shared/observability/readiness.ts';
import type { Metrics } from './metrics.ts';

export function createInternalApp(deps: {
  metrics: Pick<Metrics, 'registry'>;
  readiness: Readiness;
  logger: Pick<Logger, 'error' | 'warn'>;
}) {
  return createServiceInternalApp({
    registry: deps.metrics.registry,
    readiness: deps.readiness,
    logger: deps.logger,
  });
}
