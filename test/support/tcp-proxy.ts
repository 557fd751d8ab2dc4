/**
 * A TCP proxy on a private port that a test can stall: while stalled it keeps every connection open
 * but moves no bytes in either direction (a partition or a failover in progress, not a dead server),
 * and accepts new connections without connecting them through. `resume()` delivers what was held back;
 * `cut()` drops the connections and what they held back.
 */
import net from 'node:net';

export interface TcpProxy {
  port: number;
  url(scheme: string): string;
  stall(): void;
  resume(): void;
  /** Drops every connection at once, with whatever bytes it held back undelivered (a partition). */
  cut(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  let stalled = false;
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  const waiting: (() => void)[] = [];

  function pipe(from: net.Socket, to: net.Socket): void {
    from.on('data', (chunk) => {
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => {
      if (!stalled) from.resume();
    });
  }

  const server = net.createServer((client) => {
    client.pause();
    const connect = () => {
      const upstream = net.connect(targetPort, targetHost);
      upstream.pause();
      const pair = { client, upstream };
      pairs.add(pair);
      pipe(client, upstream);
      pipe(upstream, client);
      const end = () => {
        pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end);
      upstream.on('close', end);
      client.on('error', end);
      upstream.on('error', end);
      if (!stalled) {
        client.resume();
        upstream.resume();
      }
    };
    if (stalled) waiting.push(connect);
    else connect();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('proxy: no port');
  return {
    port: address.port,
    url: (scheme) => `${scheme}://127.0.0.1:${address.port}`,
    stall() {
      stalled = true;
      for (const { client, upstream } of pairs) {
        client.pause();
        upstream.pause();
      }
    },
    resume() {
      stalled = false;
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
    async close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
