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
import { connect, type Socket } from 'node:net';

/**
 * How the generator speaks HTTP. `http`: Node's http client (an Agent with keep-alive) — about half a
 * CPU core at 1,000 requests/s on this machine, the same cores the server under test needs. `socket`: each
 * request serialised to bytes before the clock starts and written to a kept-alive TCP connection, the
 * answer read by its Content-Length — a fraction of that CPU (bench/tail.json, "CPU by process"),
 * closer to production, where Stripe's senders do not run on the hot path's cores.
 */
export type Transport = 'http' | 'socket';

export interface OpenLoopOptions {
  url: string;
  ratePerS: number;
  seconds: number;
  /** Connections at most (kept alive); a request due while all are busy waits for one, and that wait counts. */
  connectionsMax: number;
  next(): { method: string; path: string; body: string; headers: Record<string, string> };
  /** Default `http`. */
  transport?: Transport;
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
  const total = Math.round(options.ratePerS * options.seconds);
  const latencies = new Float64Array(total);
  const latencyBySent = new Float64Array(total);
  const sendLags = new Float64Array(total);
  const generatorStalls: [number, number][] = [];
  let sent = 0;
  let completed = 0;
  let errors = 0;
  let non2xx = 0;
  const intervalMs = 1000 / options.ratePerS;
  let settle: () => void = () => {};
  const allDone = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const finish = () => {
    if (completed + errors === total) settle();
  };

  const done = (index: number, dueAt: number, status: number) => {
    if (status < 200 || status >= 300) non2xx++;
    const latency = performance.now() - dueAt;
    latencies[completed++] = latency;
    latencyBySent[index] = latency;
    finish();
  };
  const failed = () => {
    errors++;
    finish();
  };
  const dispatch =
    options.transport === 'socket'
      ? socketSender(target, options.connectionsMax, serialised(options, target, total), done, failed)
      : httpSender(
          options,
          target,
          new Agent({ keepAlive: true, maxSockets: options.connectionsMax }),
          done,
          failed,
        );

  const startedAt = performance.now();
  function send(index: number, dueAt: number): void {
    dispatch(index, dueAt, () => {
      sendLags[index] = performance.now() - dueAt;
    });
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
  dispatch.close();
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

type Done = (index: number, dueAt: number, status: number) => void;
/** Sends request `index` (due at `dueAt`), calling `handed()` when it is handed to a socket. */
interface Dispatch {
  (index: number, dueAt: number, handed: () => void): void;
  /** Closes every connection (the run is over). */
  close(): void;
}

function httpSender(
  options: OpenLoopOptions,
  target: URL,
  agent: Agent,
  done: Done,
  failed: () => void,
): Dispatch {
  const dispatch: Dispatch = (index, dueAt, handed) => {
    const { method, path, body, headers } = options.next();
    handed();
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
        res.on('data', () => {});
        res.on('end', () => done(index, dueAt, res.statusCode ?? 0));
      },
    );
    req.on('error', failed);
    req.end(body);
  };
  dispatch.close = () => agent.destroy();
  return dispatch;
}

/** Every request as the bytes of an HTTP/1.1 request, made before the clock starts. */
function serialised(options: OpenLoopOptions, target: URL, total: number): Buffer[] {
  return Array.from({ length: total }, () => {
    const { method, path, body, headers } = options.next();
    const lines = [`${method} ${path} HTTP/1.1`, `host: ${target.host}`];
    for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
    lines.push(`content-length: ${Buffer.byteLength(body)}`, '', '');
    return Buffer.concat([Buffer.from(lines.join('\r\n')), Buffer.from(body)]);
  });
}

const HEADER_END = Buffer.from('\r\n\r\n');

/**
 * Requests over at most `max` kept-alive connections, one request in flight on each (as Stripe sends);
 * a request due while every connection is busy waits for one, and that wait counts in its latency.
 * An answer is complete at its Content-Length; an answer without one, a connection error or a closed
 * connection counts as an error.
 */
function socketSender(target: URL, max: number, wire: Buffer[], done: Done, failed: () => void): Dispatch {
  interface Connection {
    socket: Socket;
    closed: boolean;
    received: Buffer;
    /** The request in flight: its index and due time. */
    inFlight: { index: number; dueAt: number } | null;
  }
  const idle: Connection[] = [];
  const queued: { index: number; dueAt: number; handed: () => void }[] = [];
  let opened = 0;
  const start = (c: Connection, index: number, dueAt: number, handed: () => void) => {
    c.inFlight = { index, dueAt };
    handed();
    c.socket.write(wire[index]!);
  };
  const release = (c: Connection) => {
    const next = queued.shift();
    if (next === undefined) idle.push(c);
    else start(c, next.index, next.dueAt, next.handed);
  };
  const all = new Set<Connection>();
  const lose = (c: Connection) => {
    if (c.closed) return;
    c.closed = true;
    all.delete(c);
    if (c.inFlight !== null) failed();
    c.inFlight = null;
    opened--;
    const at = idle.indexOf(c);
    if (at >= 0) idle.splice(at, 1);
    c.socket.destroy();
  };
  const open = (): Connection => {
    opened++;
    const socket = connect({ host: target.hostname, port: Number(target.port), noDelay: true });
    const c: Connection = { socket, closed: false, received: Buffer.alloc(0), inFlight: null };
    all.add(c);
    socket.on('data', (chunk: Buffer) => {
      c.received = c.received.length === 0 ? chunk : Buffer.concat([c.received, chunk]);
      const headerEnd = c.received.indexOf(HEADER_END);
      if (headerEnd < 0 || c.inFlight === null) return;
      const head = c.received.subarray(0, headerEnd).toString('latin1');
      const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1];
      if (length === undefined) return lose(c);
      if (c.received.length < headerEnd + HEADER_END.length + Number(length)) return;
      const { index, dueAt } = c.inFlight;
      c.inFlight = null;
      c.received = Buffer.alloc(0);
      done(index, dueAt, Number(head.slice(9, 12)));
      release(c);
    });
    socket.on('error', () => lose(c));
    socket.on('close', () => lose(c));
    return c;
  };
  const dispatch: Dispatch = (index, dueAt, handed) => {
    const c = idle.pop() ?? (opened < max ? open() : undefined);
    if (c === undefined) queued.push({ index, dueAt, handed });
    else start(c, index, dueAt, handed);
  };
  dispatch.close = () => {
    for (const c of [...all]) {
      c.inFlight = null;
      lose(c);
    }
  };
  return dispatch;
}
