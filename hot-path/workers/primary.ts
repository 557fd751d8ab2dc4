/**
 * The primary of a multi-worker hot path (HOT_PATH_WORKERS > 1): it forks the workers, which share
 * HOT_PATH_PORT through node:cluster (the primary accepts each connection and hands it to a worker in
 * turn), and does no deciding itself. Each worker is a whole hot path (hot-path/main.ts): its own Redis
 * connections, Postgres pool, lease and caches. Every decision is made by a script in Redis, so the
 * workers decide against the one Redis (or Cluster) exactly as separate processes or pods do.
 *
 * - **Restarts.** A worker that dies is started again in its slot after `workerRestartDelayMsMin`,
 *   doubling with each crash of that slot in `workerCrashWindowMs` up to `workerRestartDelayMsMax`.
 *   More than `workerCrashesMax` crashes in the window, one slot dying `workerStartFailuresMax` times
 *   in a row before it listened, or a worker refusing to start (exit 78, as a single process would),
 *   and the primary stops the others and exits non-zero (1, or 78).
 * - **Shutdown.** SIGTERM or SIGINT is passed to every worker, which drains as a single process does
 *   (stops accepting, finishes its requests, closes its connections); the primary exits once they have,
 *   0 if all exited cleanly.
 * - **Internal listener.** The primary serves /metrics, /healthz and /readyz on HOT_PATH_METRICS_PORT
 *   and asks the workers over IPC: /metrics is every worker's exposition with a `worker` label (the
 *   slot, "0" … "N-1"; the primary's own series say worker="primary"), /readyz is ready while every
 *   listening worker is ready (node:cluster gives each of them a share of the connections) and at least
 *   one listens; /healthz answers while the primary runs.
 *
 * Lines on stdout, for tests and the dev stack: `hot-path metrics on http://…` once the internal
 * listener is up, `hot-path worker <slot> pid <pid> listening on <port>` each time a worker listens,
 * `hot-path ready on http://host:port` once all N listen for the first time.
 */
import cluster, { type Worker } from 'node:cluster';
import { serve } from '@hono/node-server';
import { Counter, Gauge } from 'prom-client';
import type { Config } from '../../shared/config.ts';
import { createApp } from '../../shared/http/app.ts';
import { createLogger, createServiceRegistry, type Logger } from '../../shared/observability/index.ts';
import { limits } from '../limits.ts';
import { mergeExpositions } from './merge-metrics.ts';
import { type InternalPath, type InternalReply, isInternalReply } from './protocol.ts';

interface Slot {
  index: number;
  worker: Worker | null;
  listening: boolean;
  /** When this slot's worker died, in the crash window. */
  crashesAtMs: number[];
  /** Deaths in a row of this slot's workers before they listened. */
  startFailures: number;
  restartTimer: NodeJS.Timeout | null;
}

/** The restart delay of a slot that crashed `crashes` times in the window (1 = the first crash). */
export function restartDelayMs(crashes: number): number {
  return Math.min(
    limits.workerRestartDelayMsMax,
    limits.workerRestartDelayMsMin * 2 ** Math.max(0, crashes - 1),
  );
}

type Ask = (worker: Worker, path: InternalPath) => Promise<InternalReply>;

/** The primary's own gauges: workers configured and listening, and restarts. */
function createPrimaryMetrics(registry: ReturnType<typeof createServiceRegistry>) {
  const workersGauge = new Gauge({
    name: 'credana_hot_path_workers',
    help: 'Hot-path workers by state: configured (HOT_PATH_WORKERS) and listening',
    labelNames: ['state'] as const,
    registers: [registry],
  });
  const restarts = new Counter({
    name: 'credana_hot_path_worker_restarts_total',
    help: 'Hot-path workers started again after they died',
    registers: [registry],
  });
  return { workersGauge, restarts };
}

/**
 * Asks a worker over IPC for one internal path (its /metrics or /readyz), answering 504 when it does
 * not reply within limits.workerReplyTimeoutMs and 503 when it is gone; `onMessage` takes the replies.
 */
function createWorkerAsk(): { ask: Ask; onMessage: (message: unknown) => void } {
  let nextId = 0;
  const waiting = new Map<number, (reply: InternalReply) => void>();
  const ask: Ask = (worker, path) =>
    new Promise((resolve) => {
      const id = ++nextId;
      const timer = setTimeout(() => {
        waiting.delete(id);
        resolve({ credana: 'internal-reply', id, status: 504, body: '{"error":"worker did not answer"}' });
      }, limits.workerReplyTimeoutMs);
      waiting.set(id, (reply) => {
        clearTimeout(timer);
        waiting.delete(id);
        resolve(reply);
      });
      try {
        worker.send({ credana: 'internal-request', id, path });
      } catch {
        waiting.get(id)?.({ credana: 'internal-reply', id, status: 503, body: '{"error":"worker gone"}' });
      }
    });
  const onMessage = (message: unknown) => {
    if (isInternalReply(message)) waiting.get(message.id)?.(message);
  };
  return { ask, onMessage };
}

/**
 * The primary's internal listener: /metrics merges every listening worker's metrics with the primary's
 * own (a `worker` label on each series), /readyz is ready while every listening worker is.
 */
function primaryInternalApp(deps: {
  config: Config;
  logger: Logger;
  registry: ReturnType<typeof createServiceRegistry>;
  slots: readonly Slot[];
  ask: Ask;
}) {
  const { config, registry, slots, ask } = deps;
  const listeningSlots = () => slots.filter((s) => s.listening && s.worker !== null);
  const app = createApp({ logger: deps.logger });
  app.get('/metrics', async (c) => {
    if (!config.METRICS_ENABLED) return c.json({ error: 'not_found' }, 404);
    const live = listeningSlots();
    const replies = await Promise.all(live.map((s) => ask(s.worker as Worker, '/metrics')));
    const sources = live.flatMap((s, i) =>
      replies[i]?.status === 200 ? [{ worker: String(s.index), text: replies[i]?.body ?? '' }] : [],
    );
    sources.push({ worker: 'primary', text: await registry.metrics() });
    c.header('Content-Type', registry.contentType);
    return c.body(mergeExpositions(sources));
  });
  app.get('/healthz', (c) => c.json({ ok: true, workers: listeningSlots().length }));
  app.get('/readyz', async (c) => {
    const live = listeningSlots();
    const replies = await Promise.all(live.map((s) => ask(s.worker as Worker, '/readyz')));
    const workers = live.map((s, i) => {
      let status: unknown = null;
      try {
        status = JSON.parse(replies[i]?.body ?? 'null');
      } catch {
        // A worker's readiness that is not JSON is shown as null; its status code still counts.
      }
      return { worker: s.index, pid: s.worker?.process.pid, ready: replies[i]?.status === 200, status };
    });
    const ready = workers.length > 0 && workers.every((w) => w.ready);
    return c.json({ ready, configured: slots.length, workers }, ready ? 200 : 503);
  });
  return app;
}

/** Listens on HOT_PATH_METRICS_PORT; a port it cannot take is a configuration error (exit 78). */
function listenInternal(config: Config, app: ReturnType<typeof primaryInternalApp>) {
  return new Promise<ReturnType<typeof serve>>((resolve) => {
    const listener = serve(
      { fetch: app.fetch, port: config.HOT_PATH_METRICS_PORT, hostname: config.METRICS_HOST },
      (info) => {
        process.stdout.write(`hot-path metrics on http://${config.METRICS_HOST}:${info.port}\n`);
        resolve(listener);
      },
    );
    listener.once('error', (error: NodeJS.ErrnoException) => {
      process.stderr.write(
        `hot-path: cannot listen on ${config.METRICS_HOST}:${config.HOT_PATH_METRICS_PORT} (HOT_PATH_METRICS_PORT): ${error.code ?? error.message}\n`,
      );
      process.exit(78);
    });
  });
}

export async function runPrimary(config: Config): Promise<void> {
  const logger = createLogger(config.LOG_LEVEL, 'hot-path');
  const registry = createServiceRegistry('hot-path');
  const { workersGauge, restarts } = createPrimaryMetrics(registry);
  workersGauge.set({ state: 'configured' }, config.HOT_PATH_WORKERS);
  const slots: Slot[] = Array.from({ length: config.HOT_PATH_WORKERS }, (_, index) => ({
    index,
    worker: null,
    listening: false,
    crashesAtMs: [],
    startFailures: 0,
    restartTimer: null,
  }));
  const crashesAtMs: number[] = [];
  let stopping = false;
  let announced = false;
  let exitCode = 0;
  const updateGauge = () => workersGauge.set({ state: 'listening' }, slots.filter((s) => s.listening).length);
  const { ask, onMessage } = createWorkerAsk();
  const fork = (slot: Slot) => {
    slot.restartTimer = null;
    slot.listening = false;
    const worker = cluster.fork();
    slot.worker = worker;
    // An IPC send to a worker that just died: its 'exit' handles the rest.
    worker.on('error', (error) =>
      logger.warn({ worker: slot.index, err: String(error) }, 'hot-path worker IPC error'),
    );
    worker.on('message', onMessage);
    worker.on('listening', (address) => {
      slot.listening = true;
      slot.startFailures = 0;
      updateGauge();
      process.stdout.write(
        `hot-path worker ${slot.index} pid ${worker.process.pid} listening on ${address.port}\n`,
      );
      if (!announced && slots.every((s) => s.listening)) {
        announced = true;
        logger.info({ port: address.port, workers: slots.length }, 'hot path listening');
        process.stdout.write(`hot-path ready on http://${config.HOT_PATH_HOST}:${address.port}\n`);
      }
    });
    worker.on('exit', (code, signal) => {
      const listened = slot.listening;
      slot.worker = null;
      slot.listening = false;
      updateGauge();
      if (stopping) {
        if (code !== 0) exitCode = 1;
        if (slots.every((s) => s.worker === null)) finish();
        return;
      }
      // A worker that refuses to start (configuration, a Redis that is not durable) would refuse again.
      if (code === 78) {
        logger.error({ worker: slot.index, code }, 'hot-path worker refused to start: stopping');
        stop(78);
        return;
      }
      slot.startFailures = listened ? 0 : slot.startFailures + 1;
      if (slot.startFailures >= limits.workerStartFailuresMax) {
        logger.error(
          { worker: slot.index, code, signal },
          'hot-path worker keeps failing to start: stopping',
        );
        process.stderr.write(
          `hot-path: worker ${slot.index} died ${slot.startFailures} times in a row before listening, giving up\n`,
        );
        stop(1);
        return;
      }
      const nowMs = Date.now();
      const recent = (times: number[]) => times.filter((t) => nowMs - t < limits.workerCrashWindowMs);
      slot.crashesAtMs = [...recent(slot.crashesAtMs), nowMs];
      crashesAtMs.splice(0, crashesAtMs.length, ...recent(crashesAtMs), nowMs);
      if (crashesAtMs.length > limits.workerCrashesMax) {
        logger.error(
          { crashes: crashesAtMs.length, windowMs: limits.workerCrashWindowMs },
          'hot-path workers keep dying: stopping',
        );
        process.stderr.write(
          `hot-path: ${crashesAtMs.length} worker crashes in ${limits.workerCrashWindowMs} ms, giving up\n`,
        );
        stop(1);
        return;
      }
      const delayMs = restartDelayMs(slot.crashesAtMs.length);
      logger.warn({ worker: slot.index, code, signal, delayMs }, 'hot-path worker died: starting another');
      slot.restartTimer = setTimeout(() => {
        restarts.inc();
        fork(slot);
      }, delayMs);
    });
  };

  const internal = await listenInternal(config, primaryInternalApp({ config, logger, registry, slots, ask }));

  const finish = () => {
    internal.close();
    process.exit(exitCode);
  };
  function stop(code: number): void {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    for (const slot of slots) {
      if (slot.restartTimer !== null) clearTimeout(slot.restartTimer);
      slot.restartTimer = null;
      slot.worker?.process.kill('SIGTERM');
    }
    if (slots.every((s) => s.worker === null)) finish();
  }
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));

  for (const slot of slots) fork(slot);
}
