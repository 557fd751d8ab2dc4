/**
 * A service's internal listener: GET /metrics, /healthz (liveness: the process answers) and /readyz
 * (what the service needs to do its job), for Prometheus and health checks. Bound to METRICS_HOST on a
 * port of its own (`<SERVICE>_METRICS_PORT`), never a port the public or other services' callers use;
 * where a public port must serve /metrics too, it asks for METRICS_TOKEN (metrics-access.ts).
 */
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';
import type { Registry } from 'prom-client';
import { type AppEnv, createApp, HttpError } from '../http/app.ts';
import type { Readiness } from './health.ts';
import type { Logger } from './logger.ts';

/** `metricsEnabled: false` (METRICS_ENABLED=false) answers 404 for /metrics; health stays served. */
export function createInternalApp(deps: {
  registry: Registry;
  readiness: Readiness;
  /** Where an unexpected error is logged, with its request id (shared/http/app.ts). */
  logger: Pick<Logger, 'error' | 'warn'>;
  metricsEnabled?: boolean;
}): Hono<AppEnv> {
  const app = createApp({ logger: deps.logger });
  app.get('/metrics', async (c) => {
    if (deps.metricsEnabled === false) throw new HttpError('not_found');
    c.header('Content-Type', deps.registry.contentType);
    return c.body(await deps.registry.metrics());
  });
  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/readyz', async (c) => {
    const status = await deps.readiness();
    return c.json(status, status.ready ? 200 : 503);
  });
  return app;
}

export interface InternalListener {
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `app` on host:port (0 picks a free port) and, once listening, writes
 * `<service> metrics on http://host:port` to stdout: the line tests and the dev stack read the port
 * from. A port it cannot take (in use, not allowed) ends the process with one line naming
 * `portVariable` and exit status 78 (EX_CONFIG), like any other setting it cannot use.
 */
export function serveInternal(options: {
  app: { fetch: (request: Request) => Response | Promise<Response> };
  service: string;
  host: string;
  port: number;
  portVariable: string;
}): Promise<InternalListener> {
  return new Promise((resolve) => {
    const server = serve({ fetch: options.app.fetch, hostname: options.host, port: options.port }, (info) => {
      process.stdout.write(`${options.service} metrics on http://${options.host}:${info.port}\n`);
      resolve({
        port: info.port,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
    server.once('error', (error: NodeJS.ErrnoException) => {
      process.stderr.write(
        `${options.service}: cannot listen on ${options.host}:${options.port} (${options.portVariable}): ${error.code ?? error.message}\n`,
      );
      process.exit(78);
    });
  });
}
