/**
 * CPU time of local processes from /proc (Linux): what each part of a benchmark costs, so a figure can
 * be explained (hot path, Redis, Postgres, the load generator), not only measured. Null elsewhere.
 */
import { readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_S = 100; // USER_HZ on Linux

function ticksOf(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime, stime
}

/** User + system CPU (ms) one process has used so far, or null when it cannot be read. */
export function processCpuMs(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    return (ticksOf(readFileSync(`/proc/${pid}/stat`, 'utf8')) * 1000) / TICKS_PER_S;
  } catch {
    return null;
  }
}

/** Every local process's command name and user + system CPU (ms) so far; null when /proc is not there. */
export function everyProcessCpuMs(): Map<number, { comm: string; cpuMs: number }> | null {
  let pids: string[];
  try {
    pids = readdirSync('/proc');
  } catch {
    return null;
  }
  const out = new Map<number, { comm: string; cpuMs: number }>();
  for (const pid of pids) {
    if (!/^\d+$/.test(pid)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    out.set(Number(pid), { comm, cpuMs: (ticksOf(stat) * 1000) / TICKS_PER_S });
  }
  return out;
}

/** User + system CPU (ms) of every local process named `name` (e.g. every `postgres` backend). */
export function processesCpuMs(name: string): number | null {
  const all = everyProcessCpuMs();
  if (all === null) return null;
  let ms = 0;
  for (const { comm, cpuMs } of all.values()) if (comm === name) ms += cpuMs;
  return ms;
}

/**
 * CPU (ms) each named part used between two readings; null where either reading is missing or the
 * processes changed (a sum over processes misses those that exit between the readings).
 */
export function cpuSpent<K extends string>(
  before: Record<K, number | null>,
  after: Record<K, number | null>,
): Record<K, number | null> {
  const spent = {} as Record<K, number | null>;
  for (const key of Object.keys(before) as K[]) {
    const a = before[key];
    const b = after[key];
    // Negative when processes counted in `before` exited meanwhile (a Postgres backend closing): unknown.
    spent[key] = a === null || b === null || b < a ? null : Math.round(b - a);
  }
  return spent;
}
