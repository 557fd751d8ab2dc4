/**
 * The Supabase → financial bridge: sign-ups become financial users with the same id, and card
 * controls reach the financial database and the hot path's Redis within a second.
 *
 * Mechanism: a transactional outbox in the Supabase database (`credana_sync.outbox`, filled by the
 * triggers of the sign-up and of `card_controls`) plus LISTEN/NOTIFY on a direct connection to wake
 * this process at commit. NOTIFY is only a wake-up call: the work list is the outbox, so a missed
 * notification (bridge down, connection dropped) delays a change, never loses it — the bridge drains
 * the outbox on start, on every (re)connection of its listener, and every `bridgePollIntervalMs`.
 * For each user it reads the current `card_controls` row (never the notification's payload) and
 * writes absolute values, so repeats and reordering converge on the latest state. It writes only the
 * user's own controls (financial-user.ts); the program's (ops freeze, suspension, credit limit, daily
 * limit ceiling) are never touched, and its database role could not.
 *
 * It is an invariant that one bridge process applies changes at a time: a session advisory lock on
 * the connection that also does the outbox work. A standby process waits for the lock. (Two
 * interleaved bridges could otherwise write an older state after a newer one.)
 */
import type postgres from 'postgres';
import { applyDueDailyLimitIncreases } from '../../shared/controls/program.ts';
import type { Sql } from '../../shared/db/client.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { applyUserState, type FinancialUserDefaults } from './financial-user.ts';
import type { SyncLimits } from './limits.ts';
import type { SyncMetrics } from './metrics.ts';

export const BRIDGE_CHANNEL = 'credana_bridge';
/** pg_advisory_lock key of the bridge (unique across the project's lock keys, 74312xx). */
export const BRIDGE_LOCK_KEY = 7431200;

export interface SyncLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface UserBridgeOptions {
  /** The Supabase database (a direct or session-pooler connection: LISTEN needs a session). */
  supabase: postgres.Sql;
  financial: Sql;
  redis: Redis;
  redisPrefix: string;
  defaults: FinancialUserDefaults;
  limits: Pick<
    SyncLimits,
    'bridgeBatchMax' | 'bridgePollIntervalMs' | 'bridgeLockRetryMs' | 'retryDelayMsMin' | 'retryDelayMsMax'
  >;
  metrics: SyncMetrics;
  logger: SyncLogger;
}

export interface DrainResult {
  rows: number;
  users: number;
  /** Daily limit increases whose cool-down ended, applied by this drain's sweep. */
  increasesApplied: number;
}

export interface UserBridge {
  /** Takes the lock (waiting as a standby if needed), listens, and drains until stopped. */
  start(): Promise<void>;
  /** Drains the outbox once, now (for tests and for the catch-up path). Requires the lock. */
  drain(): Promise<DrainResult>;
  /** True while this process holds the lock. */
  isLeader(): boolean;
  stop(): Promise<void>;
}

interface OutboxRow {
  id: string;
  user_id: string;
}

interface ControlsRow {
  user_id: string;
  frozen: boolean;
  daily_limit_cents: string | null;
  blocked_mccs: string[];
  version: string;
}

export function createUserBridge(options: UserBridgeOptions): UserBridge {
  const { supabase, limits, metrics, logger } = options;
  let conn: postgres.ReservedSql | null = null;
  let listener: { unlisten(): Promise<void> } | null = null;
  let stopped = false;
  let running: Promise<void> | null = null;
  let again = false;
  let failures = 0;
  let timer: NodeJS.Timeout | null = null;

  async function acquire(): Promise<boolean> {
    const reserved = await tryBridgeLock(supabase);
    if (reserved === null) return false;
    conn = reserved;
    metrics.bridgeLeader.set(1);
    return true;
  }

  /** Drains the outbox and sweeps due increases (`drainBridge`) on the locked connection. */
  const drain = (): Promise<DrainResult> => drainBridge(options, conn);

  /** Runs drains one at a time; a wake-up during a drain causes one more drain after it. */
  function schedule(): void {
    if (stopped) return;
    if (running !== null) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await drain();
          failures = 0;
        } catch (error) {
          failures++;
          metrics.bridgeErrors.inc();
          logger.error({ err: errorFields(error), failures }, 'bridge: drain failed; retrying');
          await sleep(Math.min(limits.retryDelayMsMin * 2 ** (failures - 1), limits.retryDelayMsMax));
          if (!(await stillLeader())) return;
          again = true;
        }
      } while (again && !stopped);
    })().finally(() => {
      running = null;
    });
  }

  /** After a failure: is the locked connection alive? If not, give up the role and compete again. */
  async function stillLeader(): Promise<boolean> {
    const c = conn;
    if (c === null || stopped) return false;
    try {
      await c`select 1`;
      return true;
    } catch {
      // Any failure of `select 1` means the locked connection cannot be trusted: give up the role.
      conn = null;
      metrics.bridgeLeader.set(0);
      c.release();
      void compete();
      return false;
    }
  }

  async function compete(): Promise<void> {
    while (!stopped) {
      try {
        if (await acquire()) {
          logger.info({}, 'bridge: holding the single-instance lock');
          schedule();
          return;
        }
      } catch (error) {
        logger.warn({ err: errorFields(error) }, 'bridge: could not try the lock');
      }
      await sleep(limits.bridgeLockRetryMs);
    }
  }

  return {
    async start() {
      stopped = false;
      // Listening first, so nothing committed between the first drain and the LISTEN is missed;
      // the onlisten callback drains on every (re)connection of the listener.
      listener = await supabase.listen(
        BRIDGE_CHANNEL,
        () => schedule(),
        () => schedule(),
      );
      timer = setInterval(() => schedule(), limits.bridgePollIntervalMs);
      timer.unref();
      if (await acquire()) {
        logger.info({}, 'bridge: holding the single-instance lock');
        schedule();
      } else {
        logger.info({}, 'bridge: another process holds the lock; standing by');
        void compete();
      }
    },
    drain,
    isLeader: () => conn !== null,
    async stop() {
      stopped = true;
      if (timer !== null) clearInterval(timer);
      await listener?.unlisten().catch(() => {});
      await running;
      const c = conn;
      conn = null;
      metrics.bridgeLeader.set(0);
      if (c !== null) {
        await c`select pg_advisory_unlock(${BRIDGE_LOCK_KEY})`.catch(() => {});
        c.release();
      }
    },
  };
}

/**
 * Takes the bridge's session advisory lock on a reserved connection of `supabase`: the connection that
 * holds it, or null (released) when another process holds the lock.
 */
async function tryBridgeLock(supabase: postgres.Sql): Promise<postgres.ReservedSql | null> {
  const reserved = await supabase.reserve();
  try {
    const [row] = await reserved<{ ok: boolean }[]>`select pg_try_advisory_lock(${BRIDGE_LOCK_KEY}) as ok`;
    if (row?.ok === true) return reserved;
  } catch (error) {
    reserved.release();
    throw error;
  }
  reserved.release();
  return null;
}

/**
 * Drains the outbox, then applies the daily limit increases whose cool-down has ended (the sweep
 * runs here because the bridge is the one always-running owner of the user's limits: it runs at
 * least every `bridgePollIntervalMs`, and only on the lock holder).
 */
async function drainBridge(options: UserBridgeOptions, c: postgres.ReservedSql | null): Promise<DrainResult> {
  const { financial, redis, redisPrefix, logger } = options;
  const total = await drainOutbox(options, c);
  total.increasesApplied = await applyDueDailyLimitIncreases({
    sql: financial,
    redis,
    prefix: redisPrefix,
  });
  if (total.increasesApplied > 0)
    logger.info(
      { users: total.increasesApplied },
      'bridge: daily limit increases applied after their cool-down',
    );
  return total;
}

/** Drains `credana_sync.outbox` in batches on the locked connection `c`, applying each user's current controls. */
async function drainOutbox(options: UserBridgeOptions, c: postgres.ReservedSql | null): Promise<DrainResult> {
  const { financial, redis, redisPrefix, defaults, limits, metrics, logger } = options;
  if (c === null) throw new Error('user bridge: drain() without the lock (call start() first)');
  const total: DrainResult = { rows: 0, users: 0, increasesApplied: 0 };
  for (;;) {
    const rows = await c<OutboxRow[]>`
      select id::text, user_id from credana_sync.outbox order by outbox.id limit ${limits.bridgeBatchMax}`;
    if (rows.length === 0) return total;
    const userIds = [...new Set(rows.map((r) => r.user_id))];
    const controls = await c<ControlsRow[]>`
      select user_id, frozen, daily_limit_cents::text, blocked_mccs, version::text
      from public.card_controls where user_id = any(${c.array(userIds)}::uuid[])`;
    const byUser = new Map(controls.map((row) => [row.user_id, row]));
    for (const userId of userIds) {
      const row = byUser.get(userId);
      if (row === undefined) {
        // Deleted from Supabase before we got here; the financial user (if any) keeps its history.
        metrics.bridgeApplied.inc({ result: 'user_gone' });
        logger.warn({ userId }, 'bridge: no card_controls row for an outbox entry; skipped');
        continue;
      }
      const result = await applyUserState(
        financial,
        redis,
        redisPrefix,
        {
          userId,
          frozen: row.frozen,
          dailyLimitCents: row.daily_limit_cents === null ? null : BigInt(row.daily_limit_cents),
          blockedMccs: row.blocked_mccs,
          version: BigInt(row.version),
        },
        defaults,
      );
      metrics.bridgeApplied.inc({ result: result.created ? 'created' : 'updated' });
      logger.info(
        {
          userId,
          version: row.version,
          frozen: row.frozen,
          created: result.created,
          cached: result.cached,
        },
        'bridge: user state applied',
      );
    }
    const done = await c<{ lag_s: number }[]>`
      delete from credana_sync.outbox where id = any(${c.array(rows.map((r) => r.id))}::bigint[])
      returning extract(epoch from clock_timestamp() - created_at)::float8 as lag_s`;
    for (const row of done) metrics.bridgeLatency.observe(row.lag_s);
    total.rows += rows.length;
    total.users += userIds.length;
    if (rows.length < limits.bridgeBatchMax) return total;
  }
}

export function errorFields(error: unknown): { name: string; message: string; code?: string } {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { name: error.name, message: error.message, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { name: 'unknown', message: String(error) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
