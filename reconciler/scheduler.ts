/**
 * `npm run scheduler` — the local (dev) scheduler: runs each job of SCHEDULES (reconciliation, upkeep,
 * analytics) at start and then every `devIntervalS`, one run of a job at a time (the next is scheduled
 * when the last one ends; local-scheduler.ts), and serves the HTTP face (metrics, and the QStash
 * receiver when signing keys are configured). Without STRIPE_SECRET_KEY it leaves the `stripe` job
 * out, and refuses to start in production.
 * In production, QStash's schedules call the receiver instead: `npm run scheduler -- --serve-only`.
 *
 *   --port <n>       HTTP port (default 8791, beside the withdrawals service's 8790; 0 picks a free one)
 *   --host <addr>    address to listen on (default 127.0.0.1; behind QStash in production the receiver
 *                    must be reachable, e.g. 0.0.0.0 in a container — its requests are signature-checked)
 *   --serve-only     no local timers (production, behind QStash)
 *   --create-qstash-schedules <public base url>   create/update the QStash schedules and exit
 */

import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { configFromProcess } from '../shared/config.ts';
import { guardServiceRole } from '../shared/db/service-role.ts';
import { createLogger, createServiceRegistry } from '../shared/observability/index.ts';
import { createReceiver, createReconcileApp } from './http.ts';
import { createReconcileServices, type Runnable, runJob } from './index.ts';
import { createLocalScheduler } from './local-scheduler.ts';
import { loadLastRuns } from './metrics.ts';
import { createSchedules, SCHEDULES } from './qstash-schedules.ts';
import { checkUpkeepLimits } from './upkeep/limits.ts';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8791' },
    host: { type: 'string', default: '127.0.0.1' },
    'serve-only': { type: 'boolean' },
    'create-qstash-schedules': { type: 'string' },
  },
});
const config = configFromProcess();
checkUpkeepLimits();

// No schedule calls a job without its inputs: the nightly `stripe` run reads Stripe's API with
// STRIPE_SECRET_KEY. In production the process that QStash calls must have it; in development the
// local scheduler leaves the job out (run it by hand on an export).
const skip = new Map<Runnable, string>();
if (config.STRIPE_SECRET_KEY === undefined) {
  if (config.NODE_ENV === 'production' && values['create-qstash-schedules'] === undefined) {
    process.stderr.write(
      'scheduler: STRIPE_SECRET_KEY is not set, and the nightly stripe reconciliation reads Stripe Issuing with it; set a key with read access to Issuing\n',
    );
    process.exit(78);
  }
  skip.set('stripe', 'STRIPE_SECRET_KEY is not set');
}

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

const services = createReconcileServices(config, createLogger(config.LOG_LEVEL, 'scheduler'), {
  registry: createServiceRegistry('scheduler'),
});
// In production, never as a superuser (shared/db/service-role.ts); judged once Postgres answers.
guardServiceRole({ sql: services.database.sql, nodeEnv: config.NODE_ENV, service: 'scheduler' });
await loadLastRuns(services.database.sql, services.metrics);
const app = createReconcileApp({
  services,
  receiver: createReceiver(config.QSTASH_CURRENT_SIGNING_KEY, config.QSTASH_NEXT_SIGNING_KEY),
});
const server = serve({ fetch: app.fetch, hostname: values.host, port: Number(values.port) }, (info) =>
  services.logger.info({ port: info.port }, 'scheduler: listening'),
);

const scheduler = createLocalScheduler({
  schedules: SCHEDULES,
  run: (job) => runJob(job, services),
  now: services.now,
  skip,
});
if (values['serve-only'] !== true) {
  for (const [job, why] of skip) services.logger.info({ job, why }, 'scheduler: job not scheduled here');
  scheduler.start((job, error) =>
    services.logger.error({ job, err: (error as Error).message }, 'scheduler: run threw'),
  );
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    scheduler.stop();
    server.close();
    void services.close().then(() => process.exit(0));
  });
}
