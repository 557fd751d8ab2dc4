/**
 * One error taxonomy for every service: each error is sorted by what its caller should do, under a
 * stable `code` that logs, metric labels and the HTTP error table use (STYLE.md, "Limits and errors";
 * Ponder's RetryableError / NonRetryableUserError).
 *
 * - `environment`: a retry may cure it (a connection lost, a server restarting or overloaded, a
 *   conflict between transactions, a deadline missed). Retryable.
 * - `deployment`: not the input's fault and no retry cures it soon (a missing grant, a migration not
 *   applied, bad credentials). A request answers it as an outage; a worker that can wait (the ledger
 *   writer) waits and alerts rather than discarding good work.
 * - `data`: the input's fault (a value Postgres refuses, a constraint it breaks): not retryable.
 * - `bug`: a programmer error or anything not known here: not retryable, never swallowed.
 *
 * Postgres errors are sorted by SQLSTATE (class first, a few exact codes) and postgres.js's and Node's
 * network errors by `code`; Redis errors by the error reply's code, its first word (`replyCode`), and
 * ioredis's own errors by class. Never by message text.
 */

/** Who is at fault, which decides what the caller does (see the header). */
export type Fault = 'environment' | 'deployment' | 'data' | 'bug';

/** Every code with its fault; a metric label set is bounded by this table. */
export const ERROR_CODES = {
  // Our own.
  deadline: 'environment',
  // The hot path's Postgres fallbacks in flight are at their limit (hot-path/limits.ts fallbacksInFlightMax).
  fallback_saturated: 'environment',
  redis_account_contended: 'environment',
  // The cache's card → user view disagrees with the user's own cards (a lifecycle event refused
  // rather than booked to the wrong user): a retry after the view is repaired may succeed.
  card_owner_mismatch: 'environment',
  // A record for an authorization Postgres has under another user: refused, never booked.
  authorization_user_mismatch: 'data',
  // Postgres, by SQLSTATE (and postgres.js's / the network's connection errors: pg_connection).
  pg_connection: 'environment',
  pg_conflict: 'environment',
  pg_resources: 'environment',
  pg_shutdown: 'environment',
  pg_lock_unavailable: 'environment',
  pg_canceled: 'environment',
  // Class 58 (system error: I/O, a file missing) and XX (internal error, data corrupted): the server's
  // or its disk's, not the statement's; isolating entries would dead-letter every good one meanwhile.
  pg_system: 'environment',
  pg_data: 'data',
  pg_integrity: 'data',
  pg_privilege: 'deployment',
  pg_schema: 'deployment',
  pg_auth: 'deployment',
  pg_other: 'bug',
  pg_client: 'bug',
  // Redis, by the error reply's first word, and ioredis's connection errors (redis_connection).
  redis_connection: 'environment',
  redis_redirect: 'environment',
  redis_tryagain: 'environment',
  redis_clusterdown: 'environment',
  redis_loading: 'environment',
  redis_busy: 'environment',
  redis_readonly: 'environment',
  redis_masterdown: 'environment',
  redis_oom: 'environment',
  redis_noscript: 'environment',
  redis_noauth: 'deployment',
  redis_noperm: 'deployment',
  redis_wrongtype: 'bug',
  redis_nogroup: 'bug',
  redis_busygroup: 'bug',
  redis_err: 'bug',
  redis_other: 'bug',
  // Anything else: a programmer error (TypeError, a failed assert, …).
  unknown: 'bug',
} as const satisfies Record<string, Fault>;

export type ErrorCode = keyof typeof ERROR_CODES;
/** The codes a retry may cure (fault `environment`). */
export type RetryableCode = {
  [K in ErrorCode]: (typeof ERROR_CODES)[K] extends 'environment' ? K : never;
}[ErrorCode];

export interface Classified {
  code: ErrorCode;
  fault: Fault;
  /** True only for `environment`: a retry of the same work may succeed. */
  retryable: boolean;
}

const classified = (code: ErrorCode): Classified => {
  const fault: Fault = ERROR_CODES[code];
  return { code, fault, retryable: fault === 'environment' };
};

/** An error of ours a retry may cure, with its stable code. */
export class RetryableError extends Error {
  override name = 'RetryableError';
  constructor(
    readonly code: RetryableCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** An error of ours no retry cures, with its stable code. */
export class NonRetryableError extends Error {
  override name = 'NonRetryableError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

function codeOf(error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
}

function nameOf(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

const SQLSTATE = /^[0-9A-Z]{5}$/;

/** Node's socket errors: the peer away or unreachable (Postgres or Redis alike). */
const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** postgres.js's connection errors (its `Errors.connection`). */
const POSTGRES_JS_CONNECTION_CODES: ReadonlySet<string> = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
]);

/** postgres.js's misuse errors: a wrong call, not an outage. */
const POSTGRES_JS_CLIENT_CODES: ReadonlySet<string> = new Set([
  'MAX_PARAMETERS_EXCEEDED',
  'UNSAFE_TRANSACTION',
  'NOT_TAGGED_CALL',
  'UNDEFINED_VALUE',
  'COPY_IN_PROGRESS',
  'MESSAGE_NOT_SUPPORTED',
]);

/** A SQLSTATE by its class (the first two characters), with the exact codes that differ from theirs. */
function sqlStateCode(state: string): ErrorCode {
  switch (state) {
    case '40001': // serialization_failure
    case '40P01': // deadlock_detected
      return 'pg_conflict';
    case '55P03': // lock_not_available (lock_timeout, NOWAIT)
      return 'pg_lock_unavailable';
    case '57014': // query_canceled (statement_timeout, pg_cancel_backend)
      return 'pg_canceled';
    case '57P01': // admin_shutdown (also pg_terminate_backend)
    case '57P02': // crash_shutdown
    case '57P03': // cannot_connect_now (starting up, in recovery)
      return 'pg_shutdown';
    case '42501': // insufficient_privilege
      return 'pg_privilege';
    case '3D000': // invalid_catalog_name: no such database
    case '3F000': // invalid_schema_name
      return 'pg_schema';
  }
  switch (state.slice(0, 2)) {
    case '08': // connection exception (PgBouncer's "server conn crashed?" too)
      return 'pg_connection';
    case '53': // insufficient resources (too many connections, out of memory or disk)
      return 'pg_resources';
    case '22': // data exception
      return 'pg_data';
    case '23': // integrity constraint violation
      return 'pg_integrity';
    case '42': // syntax error or access rule violation: undefined table or column, bad SQL
      return 'pg_schema';
    case '28': // invalid authorization specification
      return 'pg_auth';
    case '58': // system error (io_error, undefined_file, …)
    case 'XX': // internal error (internal_error, data_corrupted, index_corrupted)
      return 'pg_system';
    default:
      return 'pg_other';
  }
}

/**
 * A Postgres error's class, or null when `error` is not one: a PostgresError by its SQLSTATE, a
 * postgres.js connection error or a socket error by its `code`.
 * @example classifyPostgresError(e)?.code === 'pg_integrity' // a unique violation, 23505
 */
export function classifyPostgresError(error: unknown): Classified | null {
  const code = codeOf(error);
  if (typeof code !== 'string') return null;
  if (POSTGRES_JS_CONNECTION_CODES.has(code) || NETWORK_CODES.has(code)) return classified('pg_connection');
  if (POSTGRES_JS_CLIENT_CODES.has(code)) return classified('pg_client');
  if (SQLSTATE.test(code) && (nameOf(error) === 'PostgresError' || /^[0-9]/.test(code)))
    return classified(sqlStateCode(code));
  return null;
}

/**
 * The code of a Redis error reply — its first word by the protocol's convention (`WRONGTYPE`,
 * `NOSCRIPT`, `MOVED`, `BUSYGROUP`, `ERR`, …) — or null when `error` is not an error reply.
 * @example if (replyCode(e) !== 'BUSYGROUP') throw e; // the group exists already: fine
 */
export function replyCode(error: unknown): string | null {
  if (nameOf(error) !== 'ReplyError') return null;
  const message = (error as Error).message;
  let end = 0;
  while (end < message.length && end < 32) {
    const c = message.charCodeAt(end);
    if (!((c >= 65 && c <= 90) || c === 95)) break; // A-Z, _
    end++;
  }
  return end === 0 ? null : message.slice(0, end);
}

const REPLY_CODES: Readonly<Record<string, ErrorCode>> = {
  MOVED: 'redis_redirect',
  ASK: 'redis_redirect',
  TRYAGAIN: 'redis_tryagain',
  CLUSTERDOWN: 'redis_clusterdown',
  LOADING: 'redis_loading',
  BUSY: 'redis_busy',
  READONLY: 'redis_readonly',
  MASTERDOWN: 'redis_masterdown',
  OOM: 'redis_oom',
  NOSCRIPT: 'redis_noscript',
  NOAUTH: 'redis_noauth',
  WRONGPASS: 'redis_noauth',
  NOPERM: 'redis_noperm',
  WRONGTYPE: 'redis_wrongtype',
  NOGROUP: 'redis_nogroup',
  BUSYGROUP: 'redis_busygroup',
  ERR: 'redis_err',
};

/** ioredis's (and redis-errors') classes for a connection that failed, closed or gave up. */
const REDIS_CONNECTION_CLASSES: ReadonlySet<string> = new Set([
  'AbortError',
  'InterruptError',
  'MaxRetriesPerRequestError',
  'ClusterAllFailedError',
  'ParserError',
]);

/**
 * A Redis error's class, or null when `error` is not one: an error reply by its code (replyCode), an
 * ioredis connection error by its class or socket `code`.
 *
 * ioredis 6 raises some connection failures as plain `Error`s with no class or code of their own
 * ("Connection is closed.", "Command timed out", "Stream isn't writeable…" with the offline queue
 * off). Only a caller that knows the error came out of a Redis call may take such a bare Error for
 * the connection's: classifyRedisCallError. Here it is not a Redis error.
 */
export function classifyRedisError(error: unknown): Classified | null {
  return redisClass(error, false);
}

/** True for an error whose class is exactly `Error` and that carries no `code`. */
function isBareError(error: unknown): boolean {
  return (
    error instanceof Error &&
    Object.getPrototypeOf(error) === Error.prototype &&
    codeOf(error) === undefined &&
    error.name === 'Error'
  );
}

function redisClass(error: unknown, bareIsConnection: boolean): Classified | null {
  const reply = replyCode(error);
  if (reply !== null) return classified(REPLY_CODES[reply] ?? 'redis_other');
  if (nameOf(error) === 'ReplyError') return classified('redis_other');
  const name = nameOf(error);
  if (name !== undefined && REDIS_CONNECTION_CLASSES.has(name)) return classified('redis_connection');
  const code = codeOf(error);
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return classified('redis_connection');
  if (bareIsConnection && isBareError(error)) return classified('redis_connection');
  return null;
}

/** Our own classes' codes (RetryableError, NonRetryableError, or any error of ours with a known code). */
function ownClass(error: unknown): Classified | null {
  if (error instanceof RetryableError || error instanceof NonRetryableError) return classified(error.code);
  return null;
}

/** How many wrappers (`cause`) deep classifyError looks for a known error. */
const CAUSE_DEPTH_MAX = 3;

/**
 * Every error's class: ours by their code, then Postgres's, then Redis's, then (for a wrapper, like
 * the ledger writer's ArchiveError) its `cause`'s; anything else is `unknown`, a bug. A bare socket
 * error (ECONNREFUSED) is the same for both servers and comes out as `pg_connection`; a caller that
 * needs the difference asks classifyRedisError.
 */
export function classifyError(error: unknown): Classified {
  return known(error, false) ?? classified('unknown');
}

/**
 * classifyError for a catch around Redis calls, where ioredis's bare connection errors (see
 * classifyRedisError) are taken for the connection's. Our own code on such a path throws typed errors
 * or fails an assert, and the runtime throws TypeError / RangeError…: those stay `unknown`.
 */
export function classifyRedisCallError(error: unknown): Classified {
  return known(error, true) ?? classified('unknown');
}

function known(error: unknown, bareIsRedis: boolean): Classified | null {
  let e = error;
  for (let depth = 0; depth <= CAUSE_DEPTH_MAX; depth++) {
    const c = ownClass(e) ?? classifyPostgresError(e) ?? redisClass(e, bareIsRedis && depth === 0);
    if (c !== null) return c;
    if (!(e instanceof Error) || e.cause === undefined) return null;
    e = e.cause;
  }
  return null;
}

/** True when a retry of the same work may succeed (classifyError(error).retryable). */
export function isRetryable(error: unknown): boolean {
  return classifyError(error).retryable;
}
