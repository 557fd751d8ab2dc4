/**
 * An open-loop load at a fixed rate: request i is due at start + i / rate, whatever happened to the
 * ones before, and its latency runs from that due time to the end of its response — so a slow answer
 * delays nothing and hides nothing (no coordinated omission).
 *
 * Why not autocannon's `overallRate`: it gives each connection a per-second quota that the connection
 * spends back to back at the start of every second and then pauses (autocannon lib/httpClient.js,
 * `reqsMadeThisSecond`), so "1,000 requests/s" arrives as one burst of 1,000 per second and the
 * latencies measured are the burst's queue, not the server's (seen: p50 6 ms at 1,000 req/s for a
 * server that answers one request in under 1 ms).
 */
import { Agent, request } from 'node:http';

export interface OpenLoopOptions {
  url: string;
  ratePerS: number;
  seconds: number;
  /** Connections at most (kept alive); a request due while all are busy waits for one, and that wait counts. */
  connectionsMax: number;
  next(): { method: string; path: string; body: string; headers: Record<string, string> };
}

export interface OpenLoopResult {
  sent: number;
  completed: number;
  errors: number;
  non2xx: number;
  /** Latency percentiles in ms, from due time to the end of the response. */
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  /** Completed requests per second over the run. */
  achievedPerS: number;
  /**
   * The generator's own lateness: how long after its due time each request was handed to the socket
   * (p50/p99/p99.9/max, ms). A request sent late is the load generator's fault, not the server's.
   */
  sendLagMs: { p50: number; p99: number; p999: number; max: number };
  /** Per request, in the order sent (epoch ms and ms), for run.ts to line slow answers up with causes. */
  samples: { dueAtEpochMs: Float64Array; latencyMs: Float64Array; sendLagMs: Float64Array };
  /** Gaps of ≥ 3 ms between the generator's 1 ms ticks (its event loop was busy or off the CPU). */
  generatorStalls: [number, number][];
}

export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  const at = Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
  return Math.round(sorted[Math.max(0, at)]! * 100) / 100;
}

export async function openLoop(options: OpenLoopOptions): Promise<OpenLoopResult> {
  const target = new URL(options.url);
  const agent = new Agent({ keepAlive: true, maxSockets: options.connectionsMax });
  const total = Math.round(options.ratePerS * options.seconds);
  const latencies = new Float64Array(total);
  const latencyBySent = new Float64Array(total);
  const sendLags = new Float64Array(total);
  const generatorStalls: [number, number][] = [];
  let sent = 0;
  let completed = 0;
  let errors = 0;
  let non2xx = 0;
  const startedAt = performance.now();
  const intervalMs = 1000 / options.ratePerS;
  let settle: () => void = () => {};
  const allDone = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const finish = () => {
    if (completed + errors === total) settle();
  };

  function send(index: number, dueAt: number): void {
    const { method, path, body, headers } = options.next();
    sendLags[index] = performance.now() - dueAt;
    const req = request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        method,
        path,
        headers: { ...headers, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        if ((res.statusCode ?? 0) < 200 || (res.statusCode ?? 0) >= 300) non2xx++;
        res.on('data', () => {});
        res.on('end', () => {
          const latency = performance.now() - dueAt;
          latencies[completed++] = latency;
          latencyBySent[index] = latency;
          finish();
        });
      },
    );
    req.on('error', () => {
      errors++;
      finish();
    });
    req.end(body);
  }

  // Every millisecond (or as soon as the event loop allows), send every request that is due.
  await new Promise<void>((resolve) => {
    let lastTick = performance.now();
    const tick = () => {
      const now = performance.now();
      if (now - lastTick >= 3) generatorStalls.push([performance.timeOrigin + lastTick, now - lastTick]);
      lastTick = now;
      while (sent < total && startedAt + sent * intervalMs <= now) {
        send(sent, startedAt + sent * intervalMs);
        sent++;
      }
      if (sent < total) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  await allDone;
  const elapsedS = (performance.now() - startedAt) / 1000;
  agent.destroy();
  const sorted = latencies.slice(0, completed).sort();
  const lags = sendLags.slice(0, sent).sort();
  const dueAtEpochMs = new Float64Array(sent);
  for (let i = 0; i < sent; i++) dueAtEpochMs[i] = performance.timeOrigin + startedAt + i * intervalMs;
  return {
    sent,
    completed,
    errors,
    non2xx,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    p999Ms: percentile(sorted, 0.999),
    maxMs: percentile(sorted, 1),
    achievedPerS: Math.round(completed / elapsedS),
    sendLagMs: {
      p50: percentile(lags, 0.5),
      p99: percentile(lags, 0.99),
      p999: percentile(lags, 0.999),
      max: percentile(lags, 1),
    },
    samples: { dueAtEpochMs, latencyMs: latencyBySent.slice(0, sent), sendLagMs: sendLags.slice(0, sent) },
    generatorStalls,
  };
}
