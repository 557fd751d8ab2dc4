/**
 * The open loop (open-loop.ts) in a worker thread of its own (run.ts `fixedRate`): its event loop and
 * heap are then its own, so the bench's other work — sampling /proc every 10 ms, scraping the writer's
 * metrics, the garbage of earlier rounds' signed bodies — cannot make it send late or read answers late.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openLoop, type Transport } from './open-loop.ts';

export interface OpenLoopWorkerData {
  url: string;
  ratePerS: number;
  seconds: number;
  connectionsMax: number;
  transport: Transport;
  path: string;
  requests: { body: string; headers: Record<string, string> }[];
}

const data = workerData as OpenLoopWorkerData;
let next = 0;
const result = await openLoop({
  url: data.url,
  ratePerS: data.ratePerS,
  seconds: data.seconds,
  connectionsMax: data.connectionsMax,
  transport: data.transport,
  next: () => {
    const request = data.requests[next++]!;
    return { method: 'POST', path: data.path, body: request.body, headers: request.headers };
  },
});
parentPort?.postMessage(result);
