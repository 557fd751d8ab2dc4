/**
 * The ceiling of the machine for the benchmark: a bare Hono endpoint on @hono/node-server that reads
 * and parses the same JSON body and answers — no signature, no Redis, no decision.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { configFromProcess } from '../../shared/config.ts';

const config = configFromProcess();
const app = new Hono();
app.post('/stripe/authorizations', async (c) => {
  const body = JSON.parse(await c.req.text()) as { id?: unknown };
  return c.json({ approved: typeof body.id === 'string', metadata: { reason: 'approved' } });
});
serve({ fetch: app.fetch, port: config.HOT_PATH_PORT, hostname: config.HOT_PATH_HOST }, (info) => {
  process.stdout.write(`ceiling ready on ${info.port}\n`);
});
