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
import type { Runnable } from './index.ts';

export interface ScheduleSpec {
  job: Runnable;
  /** Cron in UTC (QStash's cron runs in UTC). */
  cron: string;
  /** Seconds QStash waits for the receiver before retrying. */
  timeoutS: number;
  /** The local scheduler's period for the same job (dev has no cron). Null: not run locally. */
  devIntervalS: number | null;
}

/**
 * Every scheduled job of the program, in one list: QStash's crons in production, the local
 * scheduler's periods in dev (local-scheduler.ts). Cheap checks and upkeep every few minutes or hours;
 * the expensive checks nightly. Each job's inputs come from its own config (no schedule passes
 * arguments): `stripe` reads Stripe's API with STRIPE_SECRET_KEY, and a process without the key does
 * not run it (the scheduler refuses to start in production without it).
 */
export const SCHEDULES: readonly ScheduleSpec[] = [
  { job: 'cache', cron: '*/5 * * * *', timeoutS: 240, devIntervalS: 300 },
  { job: 'holds', cron: '*/15 * * * *', timeoutS: 600, devIntervalS: 900 },
  { job: 'chain', cron: '7 * * * *', timeoutS: 900, devIntervalS: 3_600 },
  { job: 'books', cron: '15 2 * * *', timeoutS: 900, devIntervalS: 86_400 },
  // The audit log against its on-chain anchors (the anchorer itself is a process: npm run start:anchorer).
  { job: 'anchors', cron: '37 * * * *', timeoutS: 900, devIntervalS: 3_600 },
  // Yesterday (and any day a failed night left) from Stripe's API; 03:45 leaves Stripe's late events
  // of the day a few hours to reach the ledger.
  { job: 'stripe', cron: '45 3 * * *', timeoutS: 900, devIntervalS: 86_400 },
  // Upkeep (reconciler/upkeep, docs/operations.md "Upkeep").
  { job: 'partitions', cron: '23 * * * *', timeoutS: 300, devIntervalS: 3_600 },
  { job: 'summary', cron: '*/10 * * * *', timeoutS: 300, devIntervalS: 600 },
  { job: 'hold-sweep', cron: '*/15 * * * *', timeoutS: 600, devIntervalS: 900 },
  // Analytics (reconciler/analytics, owned there). Its retention and compression jobs go here, next to
  // the refresh, as their own entries (a RUNNABLE name each, built in index.ts jobFunction).
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
