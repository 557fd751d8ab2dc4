/**
 * `npm run scheduler` — the local (dev) scheduler: runs each job of SCHEDULES at start and then every
 * `devIntervalS`, one run of a job at a time (the next is scheduled when the last one ends), and serves
 * the HTTP face (metrics, and the QStash receiver when signing keys are configured).
 * In production, QStash's schedules call the receiver instead: `npm run scheduler -- --serve-only`.
 *
 *   --port <n>       HTTP port (default 8790; 0 picks a free one)
 *   --serve-only     no local timers (production, behind QStash)
 *   --create-qstash-schedules <public base url>   create/update the QStash schedules and exit
 */

import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { configFromProcess } from '../shared/config.ts';
import { createLogger, createServiceRegistry } from '../shared/observability/index.ts';
import { createReceiver, createReconcileApp } from './reconcile/http.ts';
import { createReconcileServices, runJob } from './reconcile/index.ts';
import { loadLastRuns } from './reconcile/metrics.ts';
import { createSchedules, SCHEDULES } from './reconcile/qstash-schedules.ts';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8790' },
    'serve-only': { type: 'boolean' },
    'create-qstash-schedules': { type: 'string' },
  },
});
const config = configFromProcess();

if (values['create-qstash-schedules'] !== undefined) {
  if (config.QSTASH_TOKEN === undefined) {
    process.stderr.write('QSTASH_TOKEN is required to create schedules\n');
    process.exit(78);
  }
  const ids = await createSchedules({
    qstashUrl: config.QSTASH_URL,
    token: config.QSTASH_TOKEN,
    destinationBaseUrl: values['create-qstash-schedules'],
  });
  process.stdout.write(`${ids.join('\n')}\n`);
  process.exit(0);
}

const services = createReconcileServices(
  config,
  createLogger(config.LOG_LEVEL, 'scheduler'),
  createServiceRegistry('scheduler'),
);
await loadLastRuns(services.database.sql, services.metrics);
const app = createReconcileApp({
  services,
  receiver: createReceiver(config.QSTASH_CURRENT_SIGNING_KEY, config.QSTASH_NEXT_SIGNING_KEY),
});
const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: Number(values.port) }, (info) =>
  services.logger.info({ port: info.port }, 'scheduler: listening'),
);

const timers = new Set<NodeJS.Timeout>();
let stopping = false;
if (values['serve-only'] !== true) {
  for (const spec of SCHEDULES) {
    const intervalS = spec.devIntervalS;
    if (intervalS === null) continue;
    const tick = async () => {
      if (stopping) return;
      try {
        await runJob(spec.job, services);
      } catch (error) {
        services.logger.error({ job: spec.job, err: (error as Error).message }, 'scheduler: run threw');
      }
      if (!stopping) timers.add(setTimeout(tick, intervalS * 1000));
    };
    void tick();
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    stopping = true;
    for (const t of timers) clearTimeout(t);
    server.close();
    void services.close().then(() => process.exit(0));
  });
}
