/**
 * A TCP proxy on a private port that a test can stall: while stalled it keeps every connection open
 * but moves no bytes in either direction (a partition or a failover in progress, not a dead server),
 * and accepts new connections without connecting them through. `resume()` delivers what was held back;
 * `cut()` drops the connections and what they held back. `stall('toUpstream' | 'toClient')` stalls one
 * direction only (a one-way partition: requests go out and no answer comes back, or the other way
 * round), and `setLatencyMs` delays every chunk in both directions, in order (a slow network).
 */
import net from 'node:net';

/** Which bytes a stall holds back: all of them, those from the client, or those from the server. */
export type StallDirection = 'both' | 'toUpstream' | 'toClient';

export interface TcpProxy {
  port: number;
  url(scheme: string): string;
  stall(direction?: StallDirection): void;
  resume(): void;
  /** Drops every connection at once, with whatever bytes it held back undelivered (a partition). */
  cut(): void;
  /** Delays every chunk by `ms` from now on (0: none); chunks keep their order. */
  setLatencyMs(ms: number): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  /** Bytes from the client towards the server are held back. */
  let upStalled = false;
  /** Bytes from the server towards the client are held back. */
  let downStalled = false;
  let latencyMs = 0;
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  const waiting: (() => void)[] = [];

  function pipe(from: net.Socket, to: net.Socket, stalled: () => boolean): void {
    // With latency, a chunk waits in this direction's queue until its arrival + latency, and is written
    // only after every chunk ahead of it: one queue drained by one timer, so the stream keeps its order
    // whatever the latency does. (One timer per chunk did not: a timer's expiry counts from the event
    // loop's cached clock, and a chunk arriving after the latency was lifted was written at once, ahead
    // of a delayed chunk whose timer had not fired yet — on a busy loop the bytes of a Redis connection
    // came out of order and replies went to the wrong commands: chaos bug 8, docs/chaos.md.)
    const queue: { chunk: Buffer; dueMs: number }[] = [];
    let timer: NodeJS.Timeout | null = null;
    const writeDue = () => {
      timer = null;
      while (queue.length > 0 && queue[0]!.dueMs <= Date.now()) {
        const { chunk } = queue.shift()!;
        if (!to.destroyed) to.write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(writeDue, Math.max(1, queue[0]!.dueMs - Date.now()));
    };
    from.on('data', (chunk: Buffer) => {
      if (latencyMs <= 0 && queue.length === 0) {
        if (!to.write(chunk)) from.pause();
        return;
      }
      queue.push({ chunk, dueMs: Date.now() + latencyMs });
      if (timer === null) writeDue();
    });
    from.on('close', () => {
      if (timer !== null) clearTimeout(timer);
    });
    to.on('drain', () => {
      if (!stalled()) from.resume();
    });
  }

  const server = net.createServer((client) => {
    client.pause();
    const connect = () => {
      const upstream = net.connect(targetPort, targetHost);
      upstream.pause();
      const pair = { client, upstream };
      pairs.add(pair);
      pipe(client, upstream, () => upStalled);
      pipe(upstream, client, () => downStalled);
      const end = () => {
        pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end);
      upstream.on('close', end);
      client.on('error', end);
      upstream.on('error', end);
      if (!upStalled) client.resume();
      if (!downStalled) upstream.resume();
    };
    if (upStalled && downStalled) waiting.push(connect);
    else connect();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('proxy: no port');
  return {
    port: address.port,
    url: (scheme) => `${scheme}://127.0.0.1:${address.port}`,
    stall(direction: StallDirection = 'both') {
      if (direction !== 'toClient') upStalled = true;
      if (direction !== 'toUpstream') downStalled = true;
      for (const { client, upstream } of pairs) {
        if (upStalled) client.pause();
        if (downStalled) upstream.pause();
      }
    },
    resume() {
      upStalled = false;
      downStalled = false;
      for (const { client, upstream } of pairs) {
        client.resume();
        upstream.resume();
      }
      for (const connect of waiting.splice(0)) connect();
    },
    cut() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    setLatencyMs(ms: number) {
      latencyMs = ms;
    },
    async close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
