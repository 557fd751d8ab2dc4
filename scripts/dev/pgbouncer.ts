/**
 * A private PgBouncer (Debian's `pgbouncer`, 1.18) in front of a PostgreSQL server, for `npm run dev`,
 * the tests and the benchmarks: config, auth file, socket, log and pid file in a folder of its own, a
 * free port, never the machine's packaged instance.
 *
 * It runs in transaction pooling: a server connection is lent to a client for one transaction, which is
 * what lets N hot-path processes share a small server pool. What that rules out, and where each
 * service therefore connects, is written down in docs/ledger.md ("Connection pooling"):
 * - no protocol-level prepared statements (1.18 cannot track them; 1.21 can): a pooled URL carries
 *   `?pgbouncer=transaction`, which `createDatabase` turns into postgres.js's `prepare: false`;
 * - no startup parameters PgBouncer does not track: `statement_timeout` is ignored here
 *   (`ignore_startup_parameters`) and set per role instead (drizzle/0009);
 * - no session state: session advisory locks, LISTEN and `sql.reserve()` need a direct or
 *   session-pooled URL (the indexer's chain lock, the Supabase bridge).
 *
 * PgBouncer refuses to run as root; as root it runs as the `postgres` OS user, like the private
 * clusters of test/support/processes.ts.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { POOLED_URL_PARAM } from '../../shared/db/client.ts';

export type PgBouncerPoolMode = 'transaction' | 'session';

/**
 * Every service role (drizzle/0001, 0002, 0007) and the pool mode it needs, as production routes it
 * (deploy/pgbouncer/pgbouncer.ini, docs/ledger.md "Connection pooling"): session pooling for the roles
 * whose services hold a session advisory lock for as long as they run (the indexer's, settlement
 * worker's, liquidator's and audit anchorer's per-chain lock, `tryExclusiveSession`; one reconciliation
 * run per job, reconciler/runs.ts) and for the withdrawal approval service (production's deploy
 * files put it in the session pool), transaction pooling for the rest.
 */
export const SERVICE_ROLE_POOL_MODES = {
  credana_hot_path: 'transaction',
  credana_ledger_writer: 'transaction',
  credana_supabase_sync: 'transaction',
  credana_support_ro: 'transaction',
  credana_withdrawals: 'session',
  credana_indexer: 'session',
  credana_settlement: 'session',
  credana_liquidator: 'session',
  credana_reconciliation: 'session',
} as const satisfies Record<string, PgBouncerPoolMode>;

export type ServiceRole = keyof typeof SERVICE_ROLE_POOL_MODES;

export const SERVICE_ROLES = Object.keys(SERVICE_ROLE_POOL_MODES) as ServiceRole[];

export interface PgBouncerOptions {
  /** The PostgreSQL server behind it. */
  upstreamHost: string;
  upstreamPort: number;
  /** The port PgBouncer listens on (127.0.0.1). */
  port: number;
  /** Roles that may log in (trust authentication: PgBouncer still needs each name in its auth file). */
  users: readonly string[];
  poolMode?: PgBouncerPoolMode;
  /**
   * Per-role pool modes that differ from `poolMode` (PgBouncer's `[users]` section): one PgBouncer
   * can then serve the transaction-pooled services and the session-lock workers, as the two database
   * names of deploy/pgbouncer/pgbouncer.ini do in production.
   */
  userPoolModes?: Readonly<Record<string, PgBouncerPoolMode>>;
  /** Server connections per database and role (PgBouncer's default_pool_size). */
  poolSize?: number;
  /** Client connections PgBouncer accepts in all. */
  clientConnectionsMax?: number;
  /** Server connections per database in all roles (max_db_connections; 0 = no limit). */
  databaseConnectionsMax?: number;
  /** Its scheduling priority when started as root (nice; default -10, 0 = the starter's). */
  nice?: number;
  /** Seconds an unused server connection stays open (server_idle_timeout; PgBouncer's default 600). */
  serverIdleTimeoutS?: number;
  /** The folder for its config, log and socket; a new temporary one when absent. */
  dir?: string;
  /**
   * Its own process group, so a terminal's Ctrl-C reaches only its starter, which stops it last
   * (`npm run dev`), instead of PgBouncer shutting down while the services still drain.
   */
  detached?: boolean;
  startTimeoutMs?: number;
}

export interface PgBouncer {
  port: number;
  dir: string;
  /**
   * A URL through this PgBouncer, as `user`, to `database`, with the client settings its pool mode
   * needs (`?pgbouncer=transaction` when that user is transaction-pooled).
   */
  url(user: string, database: string): string;
  /** The pool mode `user` gets. */
  poolModeOf(user: string): PgBouncerPoolMode;
  /** PgBouncer's log so far (for a test's failure message). */
  log(): string;
  stop(): Promise<void>;
}

const PGBOUNCER_BIN = '/usr/sbin/pgbouncer';

/** Where PgBouncer writes its pid: a starter that was killed leaves PgBouncer running, and finds it here. */
export function pgBouncerPidFile(dir: string): string {
  return path.join(dir, 'pgbouncer.pid');
}

/** The ini file: one wildcard database entry, so every database of the upstream server is reachable. */
export function pgBouncerIni(options: PgBouncerOptions & { dir: string }): string {
  const dir = options.dir;
  return [
    '[databases]',
    `* = host=${options.upstreamHost} port=${options.upstreamPort}`,
    '',
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${options.port}`,
    `unix_socket_dir = ${dir}`,
    'auth_type = trust',
    `auth_file = ${path.join(dir, 'userlist.txt')}`,
    `pool_mode = ${options.poolMode ?? 'transaction'}`,
    `default_pool_size = ${options.poolSize ?? 20}`,
    `max_client_conn = ${options.clientConnectionsMax ?? 1_000}`,
    `max_db_connections = ${options.databaseConnectionsMax ?? 0}`,
    `server_idle_timeout = ${options.serverIdleTimeoutS ?? 600}`,
    // A session-pooled client leaves nothing behind for the next one (its advisory locks, settings).
    'server_reset_query = DISCARD ALL',
    // postgres.js sends statement_timeout as a startup parameter, which 1.18 cannot pass on; the
    // per-role setting (drizzle/0009) applies instead.
    'ignore_startup_parameters = extra_float_digits,statement_timeout',
    // A client that leaves a transaction open holds a server connection: cut it after 60 s.
    'idle_transaction_timeout = 60',
    'server_login_retry = 1',
    // As production (deploy/pgbouncer/pgbouncer.ini): a query waiting for a server connection fails
    // after 10 s instead of the default 120 s (with Postgres down, the first query on an open client
    // connection waits this long: the driver's timeouts do not apply, the query never reaches Postgres).
    'query_wait_timeout = 10',
    'server_connect_timeout = 5',
    `logfile = ${path.join(dir, 'pgbouncer.log')}`,
    `pidfile = ${pgBouncerPidFile(dir)}`,
    'admin_users = postgres',
    'stats_users = postgres',
    '',
    ...(Object.keys(options.userPoolModes ?? {}).length === 0
      ? []
      : [
          '[users]',
          ...Object.entries(options.userPoolModes ?? {}).map(([user, mode]) => `${user} = pool_mode=${mode}`),
          '',
        ]),
  ].join('\n');
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/** Starts PgBouncer and resolves once it accepts connections. */
export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  if (!existsSync(PGBOUNCER_BIN)) {
    throw new Error(
      `${PGBOUNCER_BIN} not found: install Debian's pgbouncer package (apt-get install pgbouncer)`,
    );
  }
  const dir = options.dir ?? mkdtempSync(path.join(tmpdir(), 'credana-pgbouncer-'));
  const ini = path.join(dir, 'pgbouncer.ini');
  writeFileSync(ini, pgBouncerIni({ ...options, dir }));
  writeFileSync(path.join(dir, 'userlist.txt'), options.users.map((user) => `"${user}" ""\n`).join(''));
  const asPostgres = process.getuid?.() === 0;
  if (asPostgres) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const bin: [string, string[]] = asPostgres
    ? ['runuser', ['-u', 'postgres', '--', PGBOUNCER_BIN, ini]]
    : [PGBOUNCER_BIN, [ini]];
  // Every statement through PgBouncer wakes it twice (request, answer). On a machine with far more
  // runnable processes than cores (the test suite on 2 cores), each wake-up waits its turn behind them,
  // which added up to seconds per decision that rebuilds an account and turned approvals into
  // timeouts. Production runs PgBouncer on cores of its own; here, as root, it runs at a higher
  // priority (nice -10) so that it is scheduled promptly when it has work.
  const [command, args]: [string, string[]] =
    asPostgres && options.nice !== 0 ? ['nice', ['-n', String(options.nice ?? -10), ...bin.flat()]] : bin;
  const child: ChildProcess = spawn(command, args, { stdio: 'ignore', detached: options.detached === true });
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
  });
  const log = () => {
    try {
      return readFileSync(path.join(dir, 'pgbouncer.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const until = Date.now() + (options.startTimeoutMs ?? 10_000);
  // Ready once it says it listens on the port (its own log) and the port answers: the port came from
  // the caller (often freePort()), and a PgBouncer that failed to bind must not be taken for whatever
  // else answers there (another test run's server or proxy).
  const listening = `listening on 127.0.0.1:${options.port}`;
  // PgBouncer 1.18 does not exit when the port is taken: it warns and serves its Unix socket only.
  const refused = `cannot listen on 127.0.0.1:${options.port}`;
  while (!(log().includes(listening) && !exited && (await answers(options.port)))) {
    if (exited || log().includes(refused) || Date.now() > until) {
      // The wrapper (runuser, nice) and PgBouncer itself, which a SIGKILL of the wrapper leaves running.
      child.kill('SIGKILL');
      const pidFile = pgBouncerPidFile(dir);
      const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      throw new Error(`PgBouncer did not start on port ${options.port}: ${log().slice(-2_000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const poolModeOf = (user: string): PgBouncerPoolMode =>
    options.userPoolModes?.[user] ?? options.poolMode ?? 'transaction';
  return {
    port: options.port,
    dir,
    poolModeOf,
    url: (user, database) =>
      `postgres://${encodeURIComponent(user)}@127.0.0.1:${options.port}/${encodeURIComponent(database)}` +
      (poolModeOf(user) === 'transaction' ? `?${POOLED_URL_PARAM}=transaction` : ''),
    log,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        await exit;
      }
      if (options.dir === undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}
