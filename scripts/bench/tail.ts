/**
 * Where a fixed-rate run's tail comes from (run.ts, the tail phase). While the open loop runs, a 10 ms
 * timeline is sampled from /proc (Linux): the hot path's JavaScript thread — CPU used and time spent
 * runnable but waiting for a CPU (`schedstat`, ns) — the ledger writer's main thread and its Postgres
 * backends (CPU), and this process (the load generator: time waiting for a CPU). Each answer slower
 * than the run's p99 is then laid over that timeline, the probe's GC pauses and event-loop stalls
 * (tail-probe.ts) and the generator's lateness, and the shares are summed: how much of the slow answers'
 * time each part accounts for, beside the same for the median answers.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { OpenLoopResult } from './open-loop.ts';
import { percentile } from './open-loop.ts';
import { everyProcessCpuMs } from './proc-cpu.ts';
import type { ProbeReport } from './tail-probe.ts';

/** CPU and run-queue wait (ms) of one task so far, from /proc/<pid>/schedstat; null when gone. */
function schedstatMs(path: string): { cpuMs: number; waitMs: number } | null {
  try {
    const [cpu, wait] = readFileSync(path, 'utf8').split(' ');
    return { cpuMs: Number(cpu) / 1e6, waitMs: Number(wait) / 1e6 };
  } catch {
    return null;
  }
}

export interface TimelinePids {
  hotPath: number;
  writer?: number | undefined;
  writerBackends: number[];
}

/**
 * Per step (10 ms asked; longer when this process waited for a CPU): epoch ms at its start and end, and
 * what each part did during it (ms).
 */
export interface Timeline {
  fromMs: number[];
  atMs: number[];
  hotCpuMs: number[];
  hotWaitMs: number[];
  writerCpuMs: number[];
  generatorWaitMs: number[];
  /** CPU time the hypervisor gave to other machines (steal, /proc/stat), summed over both CPUs. */
  stealMs: number[];
  /** CPU time the whole machine was busy (user, nice, system, irq, softirq; /proc/stat), over both CPUs. */
  busyMs: number[];
  /**
   * Every process's CPU per coarser step (PROCESS_STEP_MS), by label: the parts the bench knows by pid
   * (`hotPath`, `writer`, `writerBackends`, `bench`) and everything else by its command name. Says who
   * had the CPUs while the hot path waited for one.
   */
  processes: { fromMs: number; atMs: number; cpuMsByLabel: Record<string, number> }[];
}

/** How often every process's CPU is read (a /proc scan of every pid: too costly every 10 ms). */
const PROCESS_STEP_MS = 100;

export function startTimeline(pids: TimelinePids, stepMs = 10): { stop(): Timeline } {
  const timeline: Timeline = {
    fromMs: [],
    atMs: [],
    hotCpuMs: [],
    hotWaitMs: [],
    writerCpuMs: [],
    generatorWaitMs: [],
    stealMs: [],
    busyMs: [],
    processes: [],
  };
  const label = (pid: number, comm: string) =>
    pid === pids.hotPath
      ? 'hotPath'
      : pid === pids.writer
        ? 'writer'
        : pids.writerBackends.includes(pid)
          ? 'writerBackends'
          : pid === process.pid
            ? 'bench'
            : comm;
  const read = () => {
    const hot = schedstatMs(`/proc/${pids.hotPath}/schedstat`);
    let writerCpu = 0;
    for (const pid of [...(pids.writer === undefined ? [] : [pids.writer]), ...pids.writerBackends])
      writerCpu += schedstatMs(`/proc/${pid}/schedstat`)?.cpuMs ?? 0;
    // Every thread of this process: the load generator runs in a worker thread (open-loop-worker.ts).
    let generatorWait = 0;
    try {
      for (const task of readdirSync('/proc/self/task'))
        generatorWait += schedstatMs(`/proc/self/task/${task}/schedstat`)?.waitMs ?? 0;
    } catch {
      // Not Linux.
    }
    let steal = 0;
    let busy = 0;
    try {
      // cpu user nice system idle iowait irq softirq steal, in USER_HZ (10 ms) ticks.
      const ticks = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).map(Number);
      steal = ticks[8]! * 10;
      busy = (ticks[1]! + ticks[2]! + ticks[3]! + ticks[6]! + ticks[7]!) * 10;
    } catch {
      // Not Linux.
    }
    return {
      steal,
      busy,
      atMs: performance.timeOrigin + performance.now(),
      hotCpu: hot?.cpuMs ?? 0,
      hotWait: hot?.waitMs ?? 0,
      writerCpu,
      generatorWait,
    };
  };
  let last = read();
  const timer = setInterval(() => {
    const now = read();
    timeline.fromMs.push(last.atMs);
    timeline.atMs.push(now.atMs);
    timeline.hotCpuMs.push(now.hotCpu - last.hotCpu);
    timeline.hotWaitMs.push(now.hotWait - last.hotWait);
    // A backend that closed meanwhile makes the sum drop: count that step as unknown (0).
    timeline.writerCpuMs.push(Math.max(0, now.writerCpu - last.writerCpu));
    // A thread that ended meanwhile makes the sum drop: counted as 0.
    timeline.generatorWaitMs.push(Math.max(0, now.generatorWait - last.generatorWait));
    timeline.stealMs.push(now.steal - last.steal);
    timeline.busyMs.push(now.busy - last.busy);
    last = now;
  }, stepMs);
  let lastProcesses = { atMs: last.atMs, cpu: everyProcessCpuMs() ?? new Map() };
  const processTimer = setInterval(() => {
    const now = { atMs: performance.timeOrigin + performance.now(), cpu: everyProcessCpuMs() ?? new Map() };
    const cpuMsByLabel: Record<string, number> = {};
    for (const [pid, { comm, cpuMs }] of now.cpu) {
      // A process started meanwhile counts from 0.
      const spent = cpuMs - (lastProcesses.cpu.get(pid)?.cpuMs ?? 0);
      if (spent <= 0) continue;
      const key = label(pid, comm);
      cpuMsByLabel[key] = (cpuMsByLabel[key] ?? 0) + spent;
    }
    timeline.processes.push({ fromMs: lastProcesses.atMs, atMs: now.atMs, cpuMsByLabel });
    lastProcesses = now;
  }, PROCESS_STEP_MS);
  return {
    stop() {
      clearInterval(timer);
      clearInterval(processTimer);
      return timeline;
    },
  };
}

/** ms of [from, to] covered by [start, duration] events (events may overlap each other; rare here). */
function coveredByEvents(events: readonly (readonly number[])[], from: number, to: number): number {
  let covered = 0;
  for (const event of events) {
    const start = event[0]!;
    const end = start + event[1]!;
    if (end <= from || start >= to) continue;
    covered += Math.min(end, to) - Math.max(start, from);
  }
  return covered;
}

/** The part of a timeline series falling in [from, to], each step pro rata. */
function seriesWithin(timeline: Timeline, series: number[], from: number, to: number): number {
  let sum = 0;
  for (let i = 0; i < timeline.atMs.length; i++) {
    const end = timeline.atMs[i]!;
    const start = timeline.fromMs[i]!;
    if (end <= from || start >= to || end <= start) continue;
    sum += (series[i]! * (Math.min(end, to) - Math.max(start, from))) / (end - start);
  }
  return sum;
}

const round2 = (n: number) => Math.round(n * 100) / 100;

function percentiles(values: number[]) {
  const sorted = Float64Array.from(values).sort();
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
    max: percentile(sorted, 1),
  };
}

export interface TailAnalysis {
  requests: number;
  latencyMs: { p50: number; p99: number; p999: number; max: number };
  /** The generator's lateness in handing requests to the socket. */
  sendLagMs: OpenLoopResult['sendLagMs'];
  /** Latency counted from when the request was sent rather than due: without the generator's lateness. */
  fromSendMs: { p50: number; p99: number; p999: number; max: number };
  /** Time in the hot-path server (request parsed → answer written), from the probe. */
  serverMs: { p50: number; p99: number; p999: number; max: number } | null;
  /** EVALSHA call → reply, in the hot path (Redis plus the wait for the event loop to read it). */
  evalshaMs: { p50: number; p99: number; p999: number; max: number } | null;
  eventLoopDelayMs: ProbeReport['eventLoopDelayMs'] | null;
  gc: { count: number; totalMs: number; maxMs: number; major: number } | null;
  /** Per second of the run: the hot path's thread waiting for a CPU, its CPU, the writer's CPU (ms/s). */
  perSecondMs: {
    hotPathRunQueueWait: number;
    hotPathCpu: number;
    writerCpu: number;
    generatorRunQueueWait: number;
    steal: number;
    machineBusy: number;
  };
  /**
   * For the answers at or above the p99 (`slow`) and for those around the median (`typical`): mean
   * latency, and the mean ms of it during which each thing happened. `writerCpuMsPerS` is the writer's
   * CPU rate while those answers were in flight (compare with perSecondMs.writerCpu: bursts show as a
   * higher rate during slow answers).
   */
  slow: Attribution;
  typical: Attribution;
}

interface Attribution {
  count: number;
  latencyMs: number;
  generatorSendLagMs: number;
  generatorStalledMs: number;
  generatorRunQueueWaitMs: number;
  hotPathRunQueueWaitMs: number;
  hotPathGcMs: number;
  hotPathStalledMs: number;
  writerCpuMsPerS: number;
  /** The machine's steal time while those answers were in flight (ms/s over both CPUs). */
  stealMsPerS: number;
  /** The whole machine's busy CPU while they were in flight (ms/s over both CPUs; 2,000 = both saturated). */
  machineBusyMsPerS: number;
  /** Who used the CPU while they were in flight (ms/s, the six largest; windows of ≥ PROCESS_STEP_MS). */
  topProcessesMsPerS: Record<string, number>;
}

export function analyseTail(
  run: OpenLoopResult,
  probe: ProbeReport | null,
  timeline: Timeline,
  stepMs = 10,
): TailAnalysis {
  const { dueAtEpochMs, latencyMs, sendLagMs } = run.samples;
  const n = latencyMs.length;
  const sorted = Float64Array.from(latencyMs).sort();
  const p99 = percentile(sorted, 0.99);
  const p45 = percentile(sorted, 0.45);
  const p55 = percentile(sorted, 0.55);
  const attribution = (pick: (latency: number) => boolean): Attribution => {
    const sum = {
      count: 0,
      latencyMs: 0,
      generatorSendLagMs: 0,
      generatorStalledMs: 0,
      generatorRunQueueWaitMs: 0,
      hotPathRunQueueWaitMs: 0,
      hotPathGcMs: 0,
      hotPathStalledMs: 0,
      writerCpuMsPerS: 0,
      stealMsPerS: 0,
      machineBusyMsPerS: 0,
    };
    const processes: Record<string, number> = {};
    for (let i = 0; i < n; i++) {
      const latency = latencyMs[i]!;
      if (!pick(latency)) continue;
      const from = dueAtEpochMs[i]!;
      const to = from + latency;
      sum.count++;
      sum.latencyMs += latency;
      sum.generatorSendLagMs += sendLagMs[i]!;
      sum.generatorStalledMs += coveredByEvents(run.generatorStalls, from, to);
      sum.generatorRunQueueWaitMs += seriesWithin(timeline, timeline.generatorWaitMs, from, to);
      sum.hotPathRunQueueWaitMs += seriesWithin(timeline, timeline.hotWaitMs, from, to);
      if (probe !== null) {
        sum.hotPathGcMs += coveredByEvents(probe.gcs, from, to);
        sum.hotPathStalledMs += coveredByEvents(probe.stalls, from, to);
      }
      // The writer's CPU rate over a window of at least one step around the answer.
      const mid = (from + to) / 2;
      const half = Math.max(stepMs, to - from) / 2;
      sum.writerCpuMsPerS +=
        (seriesWithin(timeline, timeline.writerCpuMs, mid - half, mid + half) * 1000) / (2 * half);
      sum.stealMsPerS +=
        (seriesWithin(timeline, timeline.stealMs, mid - half, mid + half) * 1000) / (2 * half);
      sum.machineBusyMsPerS +=
        (seriesWithin(timeline, timeline.busyMs, mid - half, mid + half) * 1000) / (2 * half);
      const wide = Math.max(PROCESS_STEP_MS, to - from) / 2;
      for (const step of timeline.processes) {
        if (step.atMs <= mid - wide || step.fromMs >= mid + wide || step.atMs <= step.fromMs) continue;
        const share =
          (Math.min(step.atMs, mid + wide) - Math.max(step.fromMs, mid - wide)) / (step.atMs - step.fromMs);
        for (const [key, ms] of Object.entries(step.cpuMsByLabel))
          processes[key] = (processes[key] ?? 0) + (ms * share * 1000) / (2 * wide);
      }
    }
    const mean = (value: number) => (sum.count === 0 ? 0 : round2(value / sum.count));
    return {
      count: sum.count,
      latencyMs: mean(sum.latencyMs),
      generatorSendLagMs: mean(sum.generatorSendLagMs),
      generatorStalledMs: mean(sum.generatorStalledMs),
      generatorRunQueueWaitMs: mean(sum.generatorRunQueueWaitMs),
      hotPathRunQueueWaitMs: mean(sum.hotPathRunQueueWaitMs),
      hotPathGcMs: probe === null ? 0 : mean(sum.hotPathGcMs),
      hotPathStalledMs: probe === null ? 0 : mean(sum.hotPathStalledMs),
      writerCpuMsPerS: mean(sum.writerCpuMsPerS),
      stealMsPerS: mean(sum.stealMsPerS),
      machineBusyMsPerS: mean(sum.machineBusyMsPerS),
      topProcessesMsPerS: Object.fromEntries(
        Object.entries(processes)
          .sort((a, b) => b[1] - a[1])
          .slice(0, 6)
          .map(([key, ms]) => [key, mean(ms)]),
      ),
    };
  };
  let seconds = 0;
  for (let i = 0; i < timeline.atMs.length; i++) seconds += (timeline.atMs[i]! - timeline.fromMs[i]!) / 1000;
  if (seconds === 0) seconds = 1;
  const total = (series: number[]) => round2(series.reduce((a, b) => a + b, 0) / seconds);
  return {
    requests: n,
    latencyMs: { p50: run.p50Ms, p99: run.p99Ms, p999: run.p999Ms, max: run.maxMs },
    sendLagMs: run.sendLagMs,
    fromSendMs: percentiles(Array.from(latencyMs, (latency, i) => latency - sendLagMs[i]!)),
    serverMs: probe === null ? null : percentiles(probe.serverMs),
    evalshaMs: probe === null ? null : percentiles(probe.evalshaMs),
    eventLoopDelayMs: probe?.eventLoopDelayMs ?? null,
    gc:
      probe === null
        ? null
        : {
            count: probe.gcs.length,
            totalMs: round2(probe.gcs.reduce((a, g) => a + g[1], 0)),
            maxMs: round2(probe.gcs.reduce((a, g) => Math.max(a, g[1]), 0)),
            // perf_hooks NODE_PERFORMANCE_GC_MAJOR = 4 (1 minor/scavenge, 8 incremental, 16 weak callbacks).
            major: probe.gcs.filter((g) => g[2] === 4).length,
          },
    perSecondMs: {
      hotPathRunQueueWait: total(timeline.hotWaitMs),
      hotPathCpu: total(timeline.hotCpuMs),
      writerCpu: total(timeline.writerCpuMs),
      generatorRunQueueWait: total(timeline.generatorWaitMs),
      steal: total(timeline.stealMs),
      machineBusy: total(timeline.busyMs),
    },
    slow: attribution((latency) => latency >= p99),
    typical: attribution((latency) => latency >= p45 && latency <= p55),
  };
}

/** Merges several runs of one variant (interleaved rounds) into one result for percentiles. */
export function mergeRuns(runs: OpenLoopResult[]): OpenLoopResult {
  const concat = (pick: (r: OpenLoopResult) => Float64Array) => {
    const out = new Float64Array(runs.reduce((a, r) => a + pick(r).length, 0));
    let at = 0;
    for (const r of runs) {
      out.set(pick(r), at);
      at += pick(r).length;
    }
    return out;
  };
  const latencyMs = concat((r) => r.samples.latencyMs);
  const sendLagMs = concat((r) => r.samples.sendLagMs);
  const sorted = Float64Array.from(latencyMs).sort();
  const lags = Float64Array.from(sendLagMs).sort();
  return {
    sent: runs.reduce((a, r) => a + r.sent, 0),
    completed: runs.reduce((a, r) => a + r.completed, 0),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    non2xx: runs.reduce((a, r) => a + r.non2xx, 0),
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    p999Ms: percentile(sorted, 0.999),
    maxMs: percentile(sorted, 1),
    achievedPerS: Math.round(runs.reduce((a, r) => a + r.achievedPerS, 0) / Math.max(1, runs.length)),
    sendLagMs: {
      p50: percentile(lags, 0.5),
      p99: percentile(lags, 0.99),
      p999: percentile(lags, 0.999),
      max: percentile(lags, 1),
    },
    samples: { dueAtEpochMs: concat((r) => r.samples.dueAtEpochMs), latencyMs, sendLagMs },
    generatorStalls: runs.flatMap((r) => r.generatorStalls),
  };
}

/** Merges probe reports of several windows (one per round). */
export function mergeProbes(reports: ProbeReport[]): ProbeReport | null {
  if (reports.length === 0) return null;
  return {
    windowMs: reports.reduce((a, r) => a + r.windowMs, 0),
    // Percentiles cannot be merged exactly: the worst window's, which is what a tail is about.
    eventLoopDelayMs: {
      p50: Math.max(...reports.map((r) => r.eventLoopDelayMs.p50)),
      p99: Math.max(...reports.map((r) => r.eventLoopDelayMs.p99)),
      p999: Math.max(...reports.map((r) => r.eventLoopDelayMs.p999)),
      max: Math.max(...reports.map((r) => r.eventLoopDelayMs.max)),
    },
    stalls: reports.flatMap((r) => r.stalls),
    gcs: reports.flatMap((r) => r.gcs),
    serverMs: reports.flatMap((r) => r.serverMs),
    slowRequests: reports.flatMap((r) => r.slowRequests),
    evalshaMs: reports.flatMap((r) => r.evalshaMs),
  };
}

/** Concatenates timelines of several rounds. */
export function mergeTimelines(timelines: Timeline[]): Timeline {
  return {
    fromMs: timelines.flatMap((t) => t.fromMs),
    atMs: timelines.flatMap((t) => t.atMs),
    hotCpuMs: timelines.flatMap((t) => t.hotCpuMs),
    hotWaitMs: timelines.flatMap((t) => t.hotWaitMs),
    writerCpuMs: timelines.flatMap((t) => t.writerCpuMs),
    generatorWaitMs: timelines.flatMap((t) => t.generatorWaitMs),
    stealMs: timelines.flatMap((t) => t.stealMs),
    busyMs: timelines.flatMap((t) => t.busyMs),
    processes: timelines.flatMap((t) => t.processes),
  };
}
