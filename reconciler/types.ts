/** The shapes every reconciliation job shares: findings, the job's context, its outcome. */
import type { Sql } from '../shared/db/client.ts';

export const JOB_NAMES = ['cache', 'holds', 'books', 'chain', 'stripe', 'anchors'] as const;

/**
 * Every job the runner knows: the reconciliation jobs, the analytics refresh (reconciler/analytics, owned
 * there), and upkeep (reconciler/upkeep): partitions, the summary refresh, the expired-hold sweep. Here,
 * beside the names, so that a caller listing them (`npm run ops -- help`) loads no job.
 */
export const RUNNABLE = [...JOB_NAMES, 'analytics', 'partitions', 'summary', 'hold-sweep'] as const;
export type Runnable = (typeof RUNNABLE)[number];
export type JobName = (typeof JOB_NAMES)[number];

/** One thing a job found. `kind` is stable (metrics and alerts switch on it); the rest is detail. */
export interface Finding {
  kind: string;
  /** True when the job repaired what it found in this run. */
  repaired?: boolean;
  [detail: string]: string | number | boolean | null | undefined | readonly string[];
}

export interface JobOutcome {
  /** Items examined (users, holds, transfers + users + audit rows, transactions). */
  checked: number;
  findings: Finding[];
  repairs: number;
  /** Where the next run resumes; null when this run finished a whole pass. */
  cursor: string | null;
  /** Raised when a threshold was crossed (e.g. too many drifted users). */
  alert?: string;
}

export interface JobContext {
  sql: Sql;
  /** The previous run's cursor, when it stopped before the end of a pass. */
  cursor: string | null;
  now(): number;
  /** Records progress in the run row, so a crash mid-run resumes near where it stopped. */
  checkpoint(progress: { cursor: string | null; checked: number }): Promise<void>;
}

/** A run stops at a batch boundary once any of its bounds is reached. */
export function budget(startedMs: number, runTimeMaxMs: number, now: () => number) {
  return { exhausted: () => now() - startedMs >= runTimeMaxMs };
}

/** Sorts before every user id: the start of a pass over users. */
export const NIL_UUID = '00000000-0000-0000-0000-000000000000';
