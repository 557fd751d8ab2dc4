/**
 * The projection sync (financial → Supabase): keeps `account_summaries` and `account_activity`
 * equal to what the financial database says.
 *
 * - Unit of work: a user. The worker recomputes a user's whole projection from the truth
 *   (projection-read.ts) and writes absolute values, so doing a user twice is harmless (idempotent)
 *   and a deleted source row (a reorged chain event) disappears from the projection too.
 * - Incremental: a pass finds the users with any change in the window (cursor − overlap, pass upper],
 *   where a change is a row of authorizations, ledger_transfers, decisions, chain_events, positions,
 *   credit_accounts, users or cards stamped in the window, or a new price of an asset they hold. The
 *   overlap re-reads the last seconds, so a transaction that committed after the cursor passed its
 *   start time is still seen (see `SyncLimits.projectionOverlapS`).
 * - Batched: users are taken in keyset order (latest change, user id) `projectionBatchMax` at a time;
 *   each batch's projection rows and the pass's progress commit in one Supabase transaction.
 * - Crash-safe: progress lives in `credana_sync.cursors`; a new process resumes after the last
 *   committed batch. Unchanged rows are not rewritten (`is distinct from`).
 * - A periodic sweep over every user catches what no row stamps: a price going stale with time.
 * - Lag: `credana_supabase_sync_lag_seconds` = financial now − cursor.
 */
import type postgres from 'postgres';
import type { Sql } from '../../shared/db/client.ts';
import type { MerchantNames } from '../../shared/hsm/merchant-names.ts';
import type { SyncLimits } from './limits.ts';
import type { SyncMetrics } from './metrics.ts';
import {
  type ActivityRow,
  type ChainEventNames,
  readTruth,
  type SummaryRow,
  type Truth,
} from './projection-read.ts';
import { errorFields, type SyncLogger } from './user-bridge.ts';

export const INCREMENTAL_CURSOR = 'projection';
export const SWEEP_CURSOR = 'projection_sweep';
const NIL_UUID = '00000000-0000-0000-0000-000000000000';

export interface ProjectionSyncOptions {
  supabase: postgres.Sql;
  financial: Sql;
  limits: Pick<
    SyncLimits,
    | 'projectionBatchMax'
    | 'projectionPollIntervalMs'
    | 'projectionOverlapS'
    | 'projectionSweepIntervalS'
    | 'activityPerUserMax'
    | 'retryDelayMsMin'
    | 'retryDelayMsMax'
  >;
  metrics: SyncMetrics;
  logger: SyncLogger;
  chainEventNames?: ChainEventNames;
  /** The health-factor warning line in basis points of 1 (config HEALTH_FACTOR_WARNING_BPS). */
  healthWarningBps?: number;
  /** Opens sealed merchant names for the activity (none: the activity shows no merchant names). */
  merchantNames?: MerchantNames | null;
  /** Test hook: runs inside the batch's Supabase transaction, just before it commits. */
  beforeCommit?: () => Promise<void> | void;
}

export interface BatchResult {
  mode: 'incremental' | 'sweep';
  users: number;
  /** True when this batch finished its pass. */
  passDone: boolean;
}

export interface ProjectionSync {
  /** Runs one incremental batch (starting a pass if none is in progress). */
  runBatch(): Promise<BatchResult>;
  /** Runs incremental batches until the pass in progress is done; returns the users recomputed. */
  runPass(): Promise<number>;
  /** Runs one sweep batch if a sweep is due or in progress; null when not due. */
  runSweepBatch(options?: { force?: boolean }): Promise<BatchResult | null>;
  /** Loops until stopped: passes every `projectionPollIntervalMs`, sweep batches when due. */
  start(): void;
  stop(): Promise<void>;
}

/**
 * Cursor timestamps travel as Postgres text, never as JS Dates: a Date keeps milliseconds, and a
 * keyset position rounded down would return the same users again and again. Parameters are cast
 * `::text::timestamptz` for the same reason: a parameter the server types as timestamptz is
 * serialised by postgres.js through a Date.
 */
interface CursorRow {
  position: string | null;
  pass_upper: string | null;
  pass_after_ts: string | null;
  pass_after_user: string | null;
}

/** Users with a change in (from, upper], keyset-paged by (latest change, user id). */
async function dirtyUsers(
  financial: Sql,
  position: string | null,
  overlapS: number,
  upperText: string,
  after: { ts: string | null; user: string | null },
  limit: number,
): Promise<{ user_id: string; ts: string }[]> {
  return financial<{ user_id: string; ts: string }[]>`
    with bounds as (
      select coalesce(${position}::text::timestamptz - make_interval(secs => ${overlapS}), '-infinity') as lo,
        ${upperText}::text::timestamptz as upper
    ),
    changes (user_id, ts) as (
      select user_id, greatest(created_at, updated_at) from authorizations
        where user_id is not null and greatest(created_at, updated_at) > (select lo from bounds) and greatest(created_at, updated_at) <= (select upper from bounds)
      union all
      select user_id, created_at from ledger_transfers
        where user_id is not null and created_at > (select lo from bounds) and created_at <= (select upper from bounds)
      union all
      select user_id, decided_at from decisions
        where user_id is not null and decided_at > (select lo from bounds) and decided_at <= (select upper from bounds)
      union all
      select user_id, greatest(created_at, coalesce(applied_at, created_at)) from chain_events
        where user_id is not null
          and greatest(created_at, coalesce(applied_at, created_at)) > (select lo from bounds)
          and greatest(created_at, coalesce(applied_at, created_at)) <= (select upper from bounds)
      union all
      select user_id, updated_at from positions where updated_at > (select lo from bounds) and updated_at <= (select upper from bounds)
      union all
      select user_id, updated_at from credit_accounts where updated_at > (select lo from bounds) and updated_at <= (select upper from bounds)
      union all
      select id, greatest(created_at, updated_at) from users
        where greatest(created_at, updated_at) > (select lo from bounds) and greatest(created_at, updated_at) <= (select upper from bounds)
      union all
      select user_id, greatest(created_at, updated_at) from cards
        where greatest(created_at, updated_at) > (select lo from bounds) and greatest(created_at, updated_at) <= (select upper from bounds)
      union all
      select p.user_id, pr.updated_at from prices pr join positions p on p.asset_id = pr.asset_id
        where p.collateral_base > 0 and pr.updated_at > (select lo from bounds) and pr.updated_at <= (select upper from bounds)
    )
    select user_id, max(ts)::text as ts from changes
    group by user_id
    having (max(ts), user_id) > (coalesce(${after.ts}::text::timestamptz, '-infinity'), ${after.user ?? NIL_UUID}::uuid)
    order by max(ts), user_id
    limit ${limit}`;
}

const SUMMARY_COLUMNS = [
  'account_status',
  'card_status',
  'collateral_value_cents',
  'borrow_power_cents',
  'credit_limit_cents',
  'debt_onchain_cents',
  'unsettled_cents',
  'holds_cents',
  'available_cents',
  'health_factor',
  'health_notice',
  'stale_asset_ids',
] as const;

const ACTIVITY_COLUMNS = [
  'user_id',
  'kind',
  'status',
  'outcome',
  'amount_cents',
  'asset_id',
  'amount_base',
  'merchant_name',
  'merchant_category_code',
  'authorization_id',
  'decline_code',
  'decline_message',
  'occurred_at',
] as const;

const distinct = (table: string, columns: readonly string[]) =>
  `(${columns.map((c) => `${table}.${c}`).join(', ')}) is distinct from (${columns.map((c) => `excluded.${c}`).join(', ')})`;

const SUMMARY_UPSERT = `
  insert into public.account_summaries (user_id, ${SUMMARY_COLUMNS.join(', ')}, as_of, synced_at)
  select x.user_id, ${SUMMARY_COLUMNS.map((c) => `x.${c}`).join(', ')}, x.as_of, now()
  from jsonb_to_recordset($1::jsonb) as x (user_id uuid, account_status text, card_status text,
    collateral_value_cents bigint, borrow_power_cents bigint, credit_limit_cents bigint, debt_onchain_cents bigint,
    unsettled_cents bigint, holds_cents bigint, available_cents bigint, health_factor numeric,
    health_notice text, stale_asset_ids text[], as_of timestamptz)
  where exists (select 1 from auth.users u where u.id = x.user_id)
  on conflict (user_id) do update set
    ${SUMMARY_COLUMNS.map((c) => `${c} = excluded.${c}`).join(', ')}, as_of = excluded.as_of, synced_at = now()
  where ${distinct('account_summaries', SUMMARY_COLUMNS)}`;

const ACTIVITY_UPSERT = `
  insert into public.account_activity (id, ${ACTIVITY_COLUMNS.join(', ')}, synced_at)
  select x.id, ${ACTIVITY_COLUMNS.map((c) => `x.${c}`).join(', ')}, now()
  from jsonb_to_recordset($1::jsonb) as x (id text, user_id uuid, kind text, status text, outcome text,
    amount_cents bigint, asset_id text, amount_base text, merchant_name text, merchant_category_code text,
    authorization_id text, decline_code text, decline_message text, occurred_at timestamptz)
  where exists (select 1 from auth.users u where u.id = x.user_id)
  on conflict (id) do update set
    ${ACTIVITY_COLUMNS.map((c) => `${c} = excluded.${c}`).join(', ')}, synced_at = now()
  where ${distinct('account_activity', ACTIVITY_COLUMNS)}`;

export function createProjectionSync(options: ProjectionSyncOptions): ProjectionSync {
  const { limits, metrics, logger } = options;
  let stopped = true;
  let loop: Promise<void> | null = null;
  let wake: (() => void) | null = null;

  /** One incremental batch (`runIncrementalBatch` below). */
  const runBatch = (): Promise<BatchResult> => runIncrementalBatch(options);

  async function runPass(): Promise<number> {
    let users = 0;
    for (;;) {
      const result = await runBatch();
      users += result.users;
      if (result.passDone) return users;
    }
  }

  /** One sweep batch (`runSweepBatch` below). */
  const runSweep = (opts: { force?: boolean } = {}): Promise<BatchResult | null> =>
    runSweepBatch(options, opts);

  async function run(): Promise<void> {
    let failures = 0;
    while (!stopped) {
      try {
        await runPass();
        await runSweep();
        failures = 0;
        await pause(limits.projectionPollIntervalMs);
      } catch (error) {
        failures++;
        metrics.syncErrors.inc();
        logger.error({ err: errorFields(error), failures }, 'projection sync: batch failed; retrying');
        await pause(Math.min(limits.retryDelayMsMin * 2 ** (failures - 1), limits.retryDelayMsMax));
      }
    }
  }

  function pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wake = null;
        resolve();
      }
      wake = done;
    });
  }

  return {
    runBatch,
    runPass,
    runSweepBatch: runSweep,
    start() {
      if (!stopped) return;
      stopped = false;
      loop = run();
    },
    async stop() {
      stopped = true;
      wake?.();
      await loop;
      loop = null;
    },
  };
}

async function loadCursor(supabase: postgres.Sql, name: string): Promise<CursorRow> {
  const [row] = await supabase<CursorRow[]>`
    select position::text, pass_upper::text, pass_after_ts::text, pass_after_user
    from credana_sync.cursors where name = ${name}`;
  return row ?? { position: null, pass_upper: null, pass_after_ts: null, pass_after_user: null };
}

async function financialNow(financial: Sql): Promise<string> {
  const [row] = await financial<{ now: string }[]>`select now()::text as now`;
  return row!.now;
}

/** Seconds between the financial database's clock and a cursor position. */
async function lagS(financial: Sql, position: string | null): Promise<number> {
  if (position === null) return Number.POSITIVE_INFINITY;
  const [row] = await financial<{ lag_s: number }[]>`
    select extract(epoch from now() - ${position}::text::timestamptz)::float8 as lag_s`;
  return row!.lag_s;
}

/** Writes the users' projection and the cursor in one Supabase transaction. */
async function commit(
  options: ProjectionSyncOptions,
  userIds: string[],
  truth: Truth,
  name: string,
  cursor: CursorRow,
): Promise<void> {
  const { supabase, metrics } = options;
  const summaries: SummaryRow[] = truth.summaries;
  const activity: ActivityRow[] = truth.activity;
  await supabase.begin(async (tx) => {
    const s = await tx.unsafe(SUMMARY_UPSERT, [tx.json(summaries as unknown as postgres.JSONValue)]);
    const a = await tx.unsafe(ACTIVITY_UPSERT, [tx.json(activity as unknown as postgres.JSONValue)]);
    // Activity that fell out of a user's recent window, or whose source is gone (a reorg).
    const d = await tx`
      delete from public.account_activity
      where user_id = any(${tx.array(userIds)}::uuid[]) and not (id = any(${tx.array(activity.map((r) => r.id))}::text[]))`;
    await tx`
      insert into credana_sync.cursors (name, position, pass_upper, pass_after_ts, pass_after_user, updated_at)
      values (${name}, ${cursor.position}::text::timestamptz, ${cursor.pass_upper}::text::timestamptz,
        ${cursor.pass_after_ts}::text::timestamptz, ${cursor.pass_after_user}::uuid, now())
      on conflict (name) do update set position = excluded.position, pass_upper = excluded.pass_upper,
        pass_after_ts = excluded.pass_after_ts, pass_after_user = excluded.pass_after_user, updated_at = now()`;
    if (options.beforeCommit !== undefined) await options.beforeCommit();
    metrics.syncRowsWritten.inc({ table: 'account_summaries' }, s.count);
    metrics.syncRowsWritten.inc({ table: 'account_activity' }, a.count + d.count);
  });
}

/** `ProjectionSync.runBatch`: the next batch of the incremental pass (starting a pass if none is in progress). */
async function runIncrementalBatch(options: ProjectionSyncOptions): Promise<BatchResult> {
  const { supabase, financial, limits, metrics } = options;
  const startedAt = performance.now();
  const cursor = await loadCursor(supabase, INCREMENTAL_CURSOR);
  const upper = cursor.pass_upper ?? (await financialNow(financial));
  const rows = await dirtyUsers(
    financial,
    cursor.position,
    limits.projectionOverlapS,
    upper,
    {
      ts: cursor.pass_upper === null ? null : cursor.pass_after_ts,
      user: cursor.pass_upper === null ? null : cursor.pass_after_user,
    },
    limits.projectionBatchMax,
  );
  const passDone = rows.length < limits.projectionBatchMax;
  const last = rows.at(-1);
  const next: CursorRow = passDone
    ? { position: upper, pass_upper: null, pass_after_ts: null, pass_after_user: null }
    : {
        position: cursor.position,
        pass_upper: upper,
        pass_after_ts: last!.ts,
        pass_after_user: last!.user_id,
      };
  const userIds = rows.map((r) => r.user_id);
  const truth = await readTruth(financial, userIds, {
    activityPerUserMax: limits.activityPerUserMax,
    ...(options.chainEventNames === undefined ? {} : { chainEventNames: options.chainEventNames }),
    ...(options.healthWarningBps === undefined ? {} : { healthWarningBps: options.healthWarningBps }),
    merchantNames: options.merchantNames ?? null,
  });
  await commit(options, userIds, truth, INCREMENTAL_CURSOR, next);
  metrics.syncUsers.inc({ mode: 'incremental' }, userIds.length);
  metrics.syncBatchSeconds.observe((performance.now() - startedAt) / 1000);
  metrics.syncLag.set(await lagS(financial, next.position));
  return { mode: 'incremental', users: userIds.length, passDone };
}

/** `ProjectionSync.runSweepBatch`: one batch of the sweep over every user, if a sweep is due or in progress. */
async function runSweepBatch(
  options: ProjectionSyncOptions,
  opts: { force?: boolean } = {},
): Promise<BatchResult | null> {
  const { supabase, financial, limits, metrics } = options;
  const cursor = await loadCursor(supabase, SWEEP_CURSOR);
  const now = await financialNow(financial);
  const due =
    cursor.pass_upper !== null ||
    opts.force === true ||
    (await lagS(financial, cursor.position)) >= limits.projectionSweepIntervalS;
  if (!due) return null;
  const upper = cursor.pass_upper ?? now;
  const afterUser = cursor.pass_upper === null ? NIL_UUID : (cursor.pass_after_user ?? NIL_UUID);
  const rows = await financial<{ id: string }[]>`
    select id from users where id > ${afterUser}::uuid order by id limit ${limits.projectionBatchMax}`;
  const passDone = rows.length < limits.projectionBatchMax;
  const next: CursorRow = passDone
    ? { position: upper, pass_upper: null, pass_after_ts: null, pass_after_user: null }
    : {
        position: cursor.position,
        pass_upper: upper,
        pass_after_ts: null,
        pass_after_user: rows.at(-1)!.id,
      };
  const userIds = rows.map((r) => r.id);
  const truth = await readTruth(financial, userIds, {
    activityPerUserMax: limits.activityPerUserMax,
    ...(options.chainEventNames === undefined ? {} : { chainEventNames: options.chainEventNames }),
    ...(options.healthWarningBps === undefined ? {} : { healthWarningBps: options.healthWarningBps }),
    merchantNames: options.merchantNames ?? null,
  });
  await commit(options, userIds, truth, SWEEP_CURSOR, next);
  metrics.syncUsers.inc({ mode: 'sweep' }, userIds.length);
  return { mode: 'sweep', users: userIds.length, passDone };
}
