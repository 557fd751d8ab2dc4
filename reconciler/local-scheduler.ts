/**
 * The local scheduler's timing, apart from its timers so a test can drive it on a simulated clock:
 * each job of SCHEDULES with a `devIntervalS` runs once at start and then `devIntervalS` after its
 * previous run ended; one run of a job at a time. `runDue()` runs, one after the other, every job that
 * is due at `now()` (the simulated test's step); `start()` runs each job on its own timer (the
 * `npm run scheduler` process). A job that was due several times over while nothing ran (a stopped
 * process, a long simulated step) runs once, not once per missed period: every job is idempotent and
 * catches up by its own cursor.
 */
import type { Runnable } from './index.ts';
import type { ScheduleSpec } from './qstash-schedules.ts';

export interface LocalSchedulerOptions {
  schedules: readonly ScheduleSpec[];
  run(job: Runnable): Promise<unknown>;
  now: () => number;
  /** Jobs not run by this process, each with the reason (logged once by the caller). */
  skip?: ReadonlyMap<Runnable, string>;
}

export interface LocalScheduler {
  /** The jobs this scheduler runs, with their period in seconds. */
  readonly jobs: readonly { job: Runnable; intervalS: number }[];
  /** Jobs due at now(). */
  due(): Runnable[];
  /** Runs every job due at now(), in SCHEDULES order; returns the jobs it ran. */
  runDue(): Promise<Runnable[]>;
  /** Runs each job on its own timer until stop(). */
  start(onError: (job: Runnable, error: unknown) => void): void;
  stop(): void;
}

export function createLocalScheduler(options: LocalSchedulerOptions): LocalScheduler {
  const jobs = options.schedules.flatMap((spec) =>
    spec.devIntervalS === null || options.skip?.has(spec.job) === true
      ? []
      : [{ job: spec.job, intervalS: spec.devIntervalS }],
  );
  const nextDueMs = new Map<Runnable, number>();
  const running = new Set<Runnable>();
  const timers = new Set<NodeJS.Timeout>();
  let stopped = false;

  const isDue = (job: Runnable) =>
    !running.has(job) && (nextDueMs.get(job) ?? Number.NEGATIVE_INFINITY) <= options.now();

  async function runOne(job: Runnable, intervalS: number): Promise<void> {
    running.add(job);
    try {
      await options.run(job);
    } finally {
      running.delete(job);
      nextDueMs.set(job, options.now() + intervalS * 1000);
    }
  }

  return {
    jobs,
    due: () => jobs.filter(({ job }) => isDue(job)).map(({ job }) => job),
    async runDue() {
      const ran: Runnable[] = [];
      for (const { job, intervalS } of jobs) {
        if (!isDue(job)) continue;
        await runOne(job, intervalS);
        ran.push(job);
      }
      return ran;
    },
    start(onError) {
      for (const { job, intervalS } of jobs) {
        const tick = async () => {
          if (stopped) return;
          try {
            await runOne(job, intervalS);
          } catch (error) {
            onError(job, error);
          }
          if (!stopped) timers.add(setTimeout(tick, intervalS * 1000));
        };
        void tick();
      }
    },
    stop() {
      stopped = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
    },
  };
}
