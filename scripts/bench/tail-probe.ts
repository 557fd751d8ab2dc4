/**
 * A bench-only probe loaded into a server under test with `--import` (run.ts, `tailProbe: true`): it
 * records what the server's own JavaScript thread went through, so the bench can tell where a slow
 * answer came from without a line of the server's code changing:
 *  - event-loop delay (perf_hooks monitorEventLoopDelay, 1 ms resolution) and every stall of ≥ 3 ms,
 *    timed by a 5 ms timer that notes how late it fires;
 *  - every garbage collection (PerformanceObserver 'gc'): when, how long, which kind;
 *  - each HTTP request's time in the server, from the parsed request to the last byte of the answer
 *    (diagnostics_channel `http.server.request.start` / `http.server.response.finish`);
 *  - each EVALSHA's time from the call to its reply (ioredis's `evalsha`, wrapped), which includes the
 *    wait for the event loop to read the reply.
 * The bench talks to it over the IPC channel: `{ probe: 'reset' }` starts a window, `{ probe: 'report' }`
 * answers with everything recorded since. Times are epoch ms (performance.timeOrigin + now), comparable
 * with the load generator's on the same machine.
 */
import { subscribe } from 'node:diagnostics_channel';
import type { IncomingMessage } from 'node:http';
import { monitorEventLoopDelay, PerformanceObserver, performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';

/** A stall shorter than this is not recorded one by one (it is in the delay histogram). */
const STALL_MS_MIN = 3;
const TICK_MS = 5;
/** Bounds on what one window keeps (a window is a few seconds at 1,000 requests/s). */
const SAMPLES_MAX = 200_000;
const EVENTS_MAX = 20_000;

const epochMs = () => performance.timeOrigin + performance.now();

const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();

interface Window {
  startedAtMs: number;
  stalls: [number, number][];
  gcs: [number, number, number][];
  serverMs: number[];
  /** Requests that took ≥ STALL_MS_MIN in the server: [start epoch ms, ms]. */
  slowRequests: [number, number][];
  evalshaMs: number[];
}

function newWindow(): Window {
  return { startedAtMs: epochMs(), stalls: [], gcs: [], serverMs: [], slowRequests: [], evalshaMs: [] };
}
let window = newWindow();

let expected = performance.now() + TICK_MS;
setInterval(() => {
  const now = performance.now();
  const lateMs = now - expected;
  if (lateMs >= STALL_MS_MIN && window.stalls.length < EVENTS_MAX)
    window.stalls.push([performance.timeOrigin + expected, lateMs]);
  expected = now + TICK_MS;
}, TICK_MS).unref();

new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    if (window.gcs.length >= EVENTS_MAX) break;
    const kind = (entry as { detail?: { kind?: number } }).detail?.kind ?? 0;
    window.gcs.push([performance.timeOrigin + entry.startTime, entry.duration, kind]);
  }
}).observe({ entryTypes: ['gc'] });

const requestStarts = new WeakMap<IncomingMessage, number>();
subscribe('http.server.request.start', (message) => {
  requestStarts.set((message as { request: IncomingMessage }).request, performance.now());
});
subscribe('http.server.response.finish', (message) => {
  const request = (message as { request: IncomingMessage }).request;
  const startedAt = requestStarts.get(request);
  if (startedAt === undefined || window.serverMs.length >= SAMPLES_MAX) return;
  const ms = performance.now() - startedAt;
  window.serverMs.push(ms);
  if (ms >= STALL_MS_MIN && window.slowRequests.length < EVENTS_MAX)
    window.slowRequests.push([performance.timeOrigin + startedAt, ms]);
});

// ioredis's evalsha, timed: the probe's only reach into a library, and it changes nothing it returns.
const prototype = Redis.prototype as unknown as { evalsha: (...args: unknown[]) => Promise<unknown> };
const evalsha = prototype.evalsha;
prototype.evalsha = function timedEvalsha(this: unknown, ...args: unknown[]) {
  const startedAt = performance.now();
  const reply = evalsha.apply(this, args);
  const record = () => {
    if (window.evalshaMs.length < SAMPLES_MAX) window.evalshaMs.push(performance.now() - startedAt);
  };
  reply.then(record, record);
  return reply;
};

export interface ProbeReport {
  windowMs: number;
  eventLoopDelayMs: { p50: number; p99: number; p999: number; max: number };
  stalls: [number, number][];
  gcs: [number, number, number][];
  serverMs: number[];
  slowRequests: [number, number][];
  evalshaMs: number[];
}

if (typeof process.send === 'function') {
  process.on('message', (message: { probe?: string }) => {
    if (message?.probe === 'reset') {
      delay.reset();
      window = newWindow();
    } else if (message?.probe === 'report') {
      const ms = (ns: number) => Math.round(ns / 10_000) / 100;
      const report: ProbeReport = {
        windowMs: Math.round(epochMs() - window.startedAtMs),
        eventLoopDelayMs: {
          p50: ms(delay.percentile(50)),
          p99: ms(delay.percentile(99)),
          p999: ms(delay.percentile(99.9)),
          max: ms(delay.max),
        },
        stalls: window.stalls,
        gcs: window.gcs,
        serverMs: window.serverMs,
        slowRequests: window.slowRequests,
        evalshaMs: window.evalshaMs,
      };
      process.send?.({ probeReport: report });
    }
  });
  // The channel must not keep a server alive that was asked to stop.
  process.channel?.unref();
}
