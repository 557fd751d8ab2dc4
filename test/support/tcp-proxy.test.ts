// Proves the test proxy keeps a stream's bytes in order when its latency is lifted on a busy event loop (chaos bug 8).
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function listen(onConnection: (socket: net.Socket) => void): Promise<number> {
  const server = net.createServer(onConnection);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as net.AddressInfo).port;
}

async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  closers.push(() => {
    socket.destroy();
  });
  return socket;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('tcp proxy latency', () => {
  it('writes a chunk that arrives after the latency was lifted behind the delayed chunk ahead of it', async () => {
    // The interleaving of the chaos run: a chunk ('A') waits out the latency; the latency is lifted; a
    // later chunk ('B') arrives while the event loop is busy past A's due time, in the same poll phase
    // as the busy callback, before A's timer could fire. A per-chunk timer wrote B at once, ahead of A.
    const latencyMs = 300;
    let upstream: net.Socket | null = null;
    const upstreamPort = await listen((socket) => {
      upstream = socket;
    });
    const proxy: TcpProxy = await startTcpProxy(upstreamPort);
    closers.push(() => proxy.close());
    proxy.setLatencyMs(latencyMs);
    const client = await connect(proxy.port);
    let received = '';
    client.on('data', (chunk: Buffer) => {
      received += chunk.toString();
    });
    while (upstream === null) await sleep(5);
    const server = upstream as net.Socket;

    // Another connection of the same process whose data handler keeps the loop busy.
    let busyPeer: net.Socket | null = null;
    const busyPort = await listen((socket) => {
      busyPeer = socket;
    });
    const busy = await connect(busyPort);
    while (busyPeer === null) await sleep(5);
    const aWrittenAtMs = Date.now();
    busy.on('data', () => {
      while (Date.now() < aWrittenAtMs + latencyMs + 100) {
        // busy: past A's due time
      }
    });

    server.write('A');
    await sleep(50);
    proxy.setLatencyMs(0);
    // Both become readable before the loop polls again: the busy handler runs first, then B's.
    (busyPeer as net.Socket).write('x');
    server.write('B');

    const untilMs = Date.now() + 5_000;
    while (received.length < 2 && Date.now() < untilMs) await sleep(10);
    expect(received).toBe('AB');
  });

  it('keeps many chunks in order while the latency changes under them', async () => {
    let upstream: net.Socket | null = null;
    const upstreamPort = await listen((socket) => {
      upstream = socket;
    });
    const proxy = await startTcpProxy(upstreamPort);
    closers.push(() => proxy.close());
    const client = await connect(proxy.port);
    const received: number[] = [];
    let pending = '';
    client.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const parts = pending.split(',');
      pending = parts.pop() ?? '';
      for (const part of parts) received.push(Number(part));
    });
    while (upstream === null) await sleep(5);
    const server = upstream as net.Socket;
    const chunks = 300;
    for (let i = 0; i < chunks; i++) {
      // 40 ms, 0, 20 ms, 0, …: every change from a delay to none is a chance to overtake.
      if (i % 10 === 0) proxy.setLatencyMs([40, 0, 20, 0][(i / 10) % 4]!);
      server.write(`${i},`);
      if (i % 3 === 0) await sleep(1);
    }
    const untilMs = Date.now() + 10_000;
    while (received.length < chunks && Date.now() < untilMs) await sleep(10);
    expect(received).toEqual(Array.from({ length: chunks }, (_, i) => i));
  });
});
