/**
 * The HTTP face of the jobs: QStash's schedules POST here (production), and Prometheus scrapes here.
 *
 *   POST /reconcile/:job   body `{ "job": "<name>" }`, signed by QStash (`Upstash-Signature`, checked
 *                          with @upstash/qstash's Receiver against both signing keys). Runs the job and
 *                          answers 200 with its status, 409 when another run holds the lock (QStash
 *                          retries later), 500 when it failed (QStash retries; runs are idempotent).
 *                          A body over limits.httpBodyBytesMax is refused unread: 413 `body_too_large`,
 *                          nothing run or recorded.
 *   GET  /metrics          the reconciliation metrics.
 *   GET  /healthz
 */
import { Receiver } from '@upstash/qstash';
import { z } from 'zod';
import { createApp } from '../shared/http/app.ts';
import { readRawBody, requestHeader } from '../shared/http/raw-body.ts';
import { isRunnable, type ReconcileServices, runJob } from './index.ts';
import { limits } from './limits.ts';

export interface ReconcileAppOptions {
  services: ReconcileServices;
  /** Null: no QStash keys configured, the receiver refuses every request (dev uses the local scheduler). */
  receiver: Pick<Receiver, 'verify'> | null;
  /** The URL QStash was told to call, as signed (the `sub` claim); defaults to the request's URL. */
  publicUrl?: (path: string) => string;
}

const bodySchema = z.object({ job: z.string().max(32) });

export function createReceiver(currentSigningKey?: string, nextSigningKey?: string): Receiver | null {
  if (currentSigningKey === undefined || nextSigningKey === undefined) return null;
  return new Receiver({ currentSigningKey, nextSigningKey });
}

export function createReconcileApp(options: ReconcileAppOptions) {
  const { services } = options;
  const app = createApp({ logger: services.logger });
  app.get('/healthz', (c) => c.text('ok'));
  app.get('/metrics', async (c) =>
    c.body(await services.metrics.registry.metrics(), 200, {
      'content-type': services.metrics.registry.contentType,
    }),
  );
  app.post('/reconcile/:job', async (c) => {
    const job = c.req.param('job');
    const read = await readRawBody(c, limits.httpBodyBytesMax);
    if (!read.ok) {
      c.header('Connection', 'close');
      return c.json({ error: 'body_too_large' }, 413);
    }
    const body = read.text;
    const signature = requestHeader(c, 'upstash-signature');
    if (options.receiver === null || signature === undefined) return c.json({ error: 'unsigned' }, 401);
    const url = options.publicUrl?.(new URL(c.req.url).pathname) ?? c.req.url;
    const valid = await options.receiver.verify({ signature, body, url }).catch(() => false);
    if (!valid) return c.json({ error: 'bad_signature' }, 401);
    const parsed = bodySchema.safeParse(JSON.parse(body || '{}'));
    if (!parsed.success || parsed.data.job !== job || !isRunnable(job))
      return c.json({ error: 'unknown_job' }, 400);
    const result = await runJob(job, services);
    const status = result.status === 'failed' ? 500 : result.status === 'skipped' ? 409 : 200;
    return c.json(
      {
        job,
        status: result.status,
        checked: result.checked,
        findings: result.findings.length,
        repairs: result.repairs,
      },
      status,
    );
  });
  return app;
}
