/**
 * Production scheduling: one QStash schedule per job, each a cron that makes QStash POST
 * `{ "job": <name> }` to `<destinationBaseUrl>/reconcile/<name>` (the receiver in http.ts, which
 * verifies QStash's signature and runs the job). Schedule ids are fixed (`credana-reconcile-<job>`),
 * so creating them again updates them in place: the command is idempotent.
 *
 * QStash's servers are unreachable from CI; the wire request is tested against a local server
 * (qstash-schedules.test.ts).
 */
import { Client } from '@upstash/qstash';
import type { JobName } from './types.ts';

export interface ScheduleSpec {
  job: JobName | 'analytics';
  /** Cron in UTC (QStash's cron runs in UTC). */
  cron: string;
  /** Seconds QStash waits for the receiver before retrying. */
  timeoutS: number;
  /** The local scheduler's period for the same job (dev has no cron). Null: not run locally. */
  devIntervalS: number | null;
}

/** Cheap checks every few minutes; the expensive ones nightly (after the day's Stripe exports exist). */
export const SCHEDULES: readonly ScheduleSpec[] = [
  { job: 'cache', cron: '*/5 * * * *', timeoutS: 240, devIntervalS: 300 },
  { job: 'holds', cron: '*/15 * * * *', timeoutS: 600, devIntervalS: 900 },
  { job: 'chain', cron: '7 * * * *', timeoutS: 900, devIntervalS: 3_600 },
  { job: 'books', cron: '15 2 * * *', timeoutS: 900, devIntervalS: 86_400 },
  // The audit log against its on-chain anchors (the anchorer itself is a process: npm run start:anchorer).
  { job: 'anchors', cron: '37 * * * *', timeoutS: 900, devIntervalS: 3_600 },
  // Needs the day's Stripe export; run by hand in dev (`npm run reconcile -- stripe --transactions f`).
  { job: 'stripe', cron: '45 3 * * *', timeoutS: 900, devIntervalS: null },
  { job: 'analytics', cron: '*/10 * * * *', timeoutS: 600, devIntervalS: 600 },
];

/** How many times QStash retries a failed delivery (each run is idempotent, so a retry is safe). */
export const SCHEDULE_RETRIES = 3;

export const scheduleIdOf = (job: string) => `credana-reconcile-${job}`;

export interface CreateSchedulesOptions {
  /** QStash's API (QSTASH_URL). */
  qstashUrl: string;
  token: string;
  /** Public base URL of the receiver, e.g. https://jobs.credana.example. */
  destinationBaseUrl: string;
  schedules?: readonly ScheduleSpec[];
}

/** Creates (or updates) every schedule. Returns the schedule ids QStash answered. */
export async function createSchedules(options: CreateSchedulesOptions): Promise<string[]> {
  const client = new Client({
    baseUrl: options.qstashUrl,
    token: options.token,
    retry: false,
    enableTelemetry: false,
    devMode: false,
  });
  const base = options.destinationBaseUrl.replace(/\/+$/, '');
  const ids: string[] = [];
  for (const spec of options.schedules ?? SCHEDULES) {
    const { scheduleId } = await client.schedules.create({
      destination: `${base}/reconcile/${spec.job}`,
      cron: spec.cron,
      scheduleId: scheduleIdOf(spec.job),
      method: 'POST',
      body: JSON.stringify({ job: spec.job }),
      headers: { 'Content-Type': 'application/json' },
      retries: SCHEDULE_RETRIES,
      timeout: spec.timeoutS,
    });
    ids.push(scheduleId);
  }
  return ids;
}
