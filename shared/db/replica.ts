/**
 * Reads that may lag go to the streaming read replica; when it is down, not a standby, or too far
 * behind, they go to the primary, with a metric and one log line per change of route.
 *
 * Which reads may lag is the caller's decision, made once per use: analytics ingestion, reports and the
 * read-only checks of reconciliation take `reader.read()`; anything that decides money (the hot path,
 * the ledger writer, a repair) keeps using the primary. Lag is measured in WAL bytes (the primary's
 * current LSN minus the replica's replayed LSN): a time since the last replayed transaction grows on an
 * idle primary and would call a replica that is fully caught up "late".
 */

import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import type { Config } from '../config.ts';
import { createDatabase, type Sql } from './client.ts';

export type ReplicaRoute = 'replica' | 'primary';
export type ReplicaReason =
  | 'healthy'
  | 'no_replica'
  | 'unreachable'
  | 'not_a_standby'
  | 'lagging'
  /** The replica answers but the primary does not: lag-tolerant reads stay possible, unmeasured. */
  | 'primary_unreachable';

export interface ReplicaState {
  route: ReplicaRoute;
  reason: ReplicaReason;
  /** WAL bytes the replica has yet to replay; null when it could not be measured. */
  lagBytes: number | null;
  checkedAtMs: number;
}

export interface ReplicaReaderOptions {
  primary: Sql;
  /** null when no replica is configured (READ_REPLICA_URL unset): every read goes to the primary. */
  replica: Sql | null;
  /** Past this lag the primary answers instead (READ_REPLICA_LAG_BYTES_MAX). */
  lagBytesMax: number;
  /** A check not answered in this time counts as an unreachable replica. */
  checkTimeoutMs: number;
  /** `read()` re-checks the replica at most this often. */
  checkIntervalMs: number;
  logger: Logger;
  registry?: Registry;
  /** Names the reader in metrics and logs (e.g. `report`, `reconcile`). */
  name: string;
  nowMs?: () => number;
}

export interface ReplicaReader {
  /** The connection for a read that tolerates the replica's lag. */
  read(): Promise<Sql>;
  /** Checks the replica now and returns the route it chose. */
  check(): Promise<ReplicaState>;
  state(): ReplicaState | null;
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function createReplicaReader(options: ReplicaReaderOptions): ReplicaReader {
  const nowMs = options.nowMs ?? Date.now;
  const lagGauge = new Gauge({
    name: 'credana_replica_lag_bytes',
    help: 'WAL bytes the read replica has yet to replay (-1 when it could not be measured)',
    labelNames: ['reader'],
    registers: options.registry ? [options.registry] : [],
  });
  const onPrimaryGauge = new Gauge({
    name: 'credana_replica_reads_on_primary',
    help: 'Whether reads that may lag are going to the primary (1: replica down, not a standby, lagging or not configured) or to the replica (0)',
    labelNames: ['reader', 'reason'],
    registers: options.registry ? [options.registry] : [],
  });
  let current: ReplicaState | null = null;
  let inFlight: Promise<ReplicaState> | null = null;

  async function measure(): Promise<ReplicaState> {
    const checkedAtMs = nowMs();
    if (options.replica === null)
      return { route: 'primary', reason: 'no_replica', lagBytes: null, checkedAtMs };
    let replayed: { standby: boolean; lsn: string | null };
    try {
      const [row] = await withTimeout(
        options.replica<{ standby: boolean; lsn: string | null }[]>`
          select pg_is_in_recovery() as standby, pg_last_wal_replay_lsn()::text as lsn`,
        options.checkTimeoutMs,
      );
      if (row === undefined) throw new Error('no row');
      replayed = row;
    } catch {
      // Whatever failed, the replica is not known to be current: read the primary (the safe side).
      return { route: 'primary', reason: 'unreachable', lagBytes: null, checkedAtMs };
    }
    // A promoted replica is a primary of its own, diverging from ours: never read it as our replica.
    if (!replayed.standby || replayed.lsn === null) {
      return { route: 'primary', reason: 'not_a_standby', lagBytes: null, checkedAtMs };
    }
    let lag: { bytes: string } | undefined;
    try {
      [lag] = await withTimeout(
        options.primary<{ bytes: string }[]>`
          select greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), ${replayed.lsn}::pg_lsn), 0)::bigint::text as bytes`,
        options.checkTimeoutMs,
      );
    } catch {
      // The primary did not say how far behind the replica is; the replica answered and is a standby.
      return { route: 'replica', reason: 'primary_unreachable', lagBytes: null, checkedAtMs };
    }
    const lagBytes = Number(lag?.bytes ?? Number.NaN);
    if (!Number.isFinite(lagBytes))
      return { route: 'primary', reason: 'unreachable', lagBytes: null, checkedAtMs };
    return lagBytes > options.lagBytesMax
      ? { route: 'primary', reason: 'lagging', lagBytes, checkedAtMs }
      : { route: 'replica', reason: 'healthy', lagBytes, checkedAtMs };
  }

  function record(next: ReplicaState): void {
    lagGauge.set({ reader: options.name }, next.lagBytes ?? -1);
    onPrimaryGauge.reset();
    onPrimaryGauge.set({ reader: options.name, reason: next.reason }, next.route === 'primary' ? 1 : 0);
    const changed = current === null || current.route !== next.route || current.reason !== next.reason;
    if (changed && next.reason !== 'no_replica') {
      const fields = {
        reader: options.name,
        route: next.route,
        reason: next.reason,
        lagBytes: next.lagBytes,
      };
      if (next.route === 'primary') {
        options.logger.warn(fields, 'read replica not used: reads that may lag go to the primary');
      } else {
        options.logger.info(fields, 'read replica in use');
      }
    }
    current = next;
  }

  async function check(): Promise<ReplicaState> {
    inFlight ??= measure()
      .then((next) => {
        record(next);
        return next;
      })
      .finally(() => {
        inFlight = null;
      });
    return inFlight;
  }

  return {
    async read() {
      const state =
        current !== null && nowMs() - current.checkedAtMs < options.checkIntervalMs ? current : await check();
      return state.route === 'replica' && options.replica !== null ? options.replica : options.primary;
    },
    check,
    state: () => current,
  };
}

/**
 * A reader on `config`'s replica (READ_REPLICA_URL, none when unset) beside an open primary; `close`
 * closes the replica's connections only.
 */
export function openReplicaReader(
  config: Pick<Config, 'READ_REPLICA_URL' | 'READ_REPLICA_LAG_BYTES_MAX'>,
  primary: Sql,
  options: { name: string; logger: Logger; registry?: Registry; poolMax?: number },
): { reader: ReplicaReader; close(): Promise<void> } {
  const replica =
    config.READ_REPLICA_URL === undefined
      ? null
      : createDatabase({
          url: config.READ_REPLICA_URL,
          poolMax: options.poolMax ?? 2,
          applicationName: `credana-${options.name}`,
          connectTimeoutS: 2,
        });
  const reader = createReplicaReader({
    primary,
    replica: replica?.sql ?? null,
    lagBytesMax: config.READ_REPLICA_LAG_BYTES_MAX,
    checkTimeoutMs: 2_000,
    checkIntervalMs: 5_000,
    logger: options.logger,
    ...(options.registry === undefined ? {} : { registry: options.registry }),
    name: options.name,
  });
  return { reader, close: async () => replica?.close() };
}
