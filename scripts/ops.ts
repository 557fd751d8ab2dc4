/**
 * `npm run ops -- <command> [args]` — the operator CLI. `npm run ops -- help` lists the commands,
 * `npm run ops -- help <command>` shows one's usage. Every mutating command needs `--reason "..."`
 * and records who (`--actor`, default the OS user) and why in the audit log.
 *
 * Exit status: 0 done, 1 failed, 2 bad input (one clear line on stderr).
 * Commands: scripts/ops/controls.ts (program controls, docs/controls.md), scripts/ops/dead-letters.ts
 * (the ledger writer's dead letters, docs/ledger.md), scripts/ops/lookup.ts (find and show a user),
 * scripts/ops/backlog.ts (outbox, writer lag, indexer head), scripts/ops/reconcile.ts (run a job).
 */
import postgres from 'postgres';
import type { ReconcileServices } from '../reconciler/index.ts';
import { type Config, configFromProcess } from '../shared/config.ts';
import type { ControlsDeps } from '../shared/controls/program.ts';
import { createDatabase, type Database } from '../shared/db/client.ts';
import { type ConfiguredMerchantNames, merchantNamesFromConfig } from '../shared/hsm/merchant-names.ts';
import { createLogger } from '../shared/observability/logger.ts';
import { createServiceRedis, type Redis } from '../shared/redis/client.ts';
import { backlogCommands } from './ops/backlog.ts';
import type { OpsCommand, OpsIo } from './ops/command.ts';
import { controlsCommands } from './ops/controls.ts';
import { deadLetterCommands } from './ops/dead-letters.ts';
import { type LookupDeps, lookupCommands } from './ops/lookup.ts';
import { reconcileCommand } from './ops/reconcile.ts';

const io: OpsIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

// Connections open on first use, so `help` and bad input need neither Postgres nor Redis.
const open: {
  config?: Config;
  database?: Database;
  redis?: Redis;
  deps?: ControlsDeps;
  supabase?: postgres.Sql;
  reconcile?: ReconcileServices;
  sealing?: ConfiguredMerchantNames | null;
} = {};
function config(): Config {
  open.config ??= configFromProcess();
  return open.config;
}
async function openDeps(): Promise<ControlsDeps> {
  if (open.deps === undefined) {
    const config = configFromProcess();
    open.config ??= config;
    const database = createDatabase({
      url: config.DATABASE_URL,
      poolMax: 2,
      statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
      applicationName: 'ops',
    });
    const redis = createServiceRedis(config, { connectionName: 'ops', commandTimeoutMs: 5_000 });
    Object.assign(open, {
      database,
      redis,
      deps: { sql: database.sql, redis, prefix: config.REDIS_KEY_PREFIX },
    });
  }
  return open.deps as ControlsDeps;
}

/** Lookups read the financial database and Redis, and Supabase for emails and names. */
async function lookupDeps(): Promise<LookupDeps> {
  const deps = await openDeps();
  // Sealed merchant names open through the token the config names, if any (opened on first use).
  open.sealing ??= merchantNamesFromConfig(config(), deps.sql);
  return {
    ...deps,
    healthWarningBps: config().HEALTH_FACTOR_WARNING_BPS,
    merchantNames: open.sealing?.names ?? null,
    async supabase() {
      open.supabase ??= postgres(config().SUPABASE_DB_URL, {
        max: 1,
        connect_timeout: 5,
        onnotice: () => {},
        connection: { application_name: 'ops', statement_timeout: 10_000 },
      });
      return open.supabase;
    },
  };
}

async function backlogDeps() {
  const deps = await openDeps();
  // Loaded here, not at the top: `help` and the other commands start faster without viem.
  const { createPublicClient, http } = await import('viem');
  const client = createPublicClient({
    transport: http(config().CHAIN_RPC_URL, { retryCount: 1, timeout: 5_000 }),
  });
  return {
    ...deps,
    async chainHead() {
      const [chainId, blockNumber] = await Promise.all([
        client.getChainId(),
        client.getBlockNumber({ cacheTime: 0 }),
      ]);
      return { chainId, blockNumber };
    },
  };
}

async function reconcileServices(): Promise<ReconcileServices> {
  // The command prints the run's summary and findings itself; the runner's JSON log lines would mix
  // with them on stdout.
  const { createReconcileServices } = await import('../reconciler/index.ts');
  open.reconcile ??= createReconcileServices(config(), createLogger('silent', 'ops'));
  return open.reconcile;
}

const commands: OpsCommand[] = [
  ...lookupCommands({ deps: lookupDeps }),
  ...controlsCommands({ deps: openDeps }),
  ...deadLetterCommands,
  ...backlogCommands({ deps: backlogDeps }),
  reconcileCommand({ services: reconcileServices }),
];
const byName = new Map(commands.map((c) => [c.name, c]));

function help(name: string | undefined): number {
  if (name === undefined) {
    io.out('usage: npm run ops -- <command> [args]   (npm run ops -- help <command> for one)');
    const width = Math.max(...commands.map((c) => c.name.length));
    for (const c of commands) io.out(`  ${c.name.padEnd(width)}  ${c.summary}`);
    return 0;
  }
  const found = byName.get(name);
  if (found === undefined) {
    io.err(`ops: no command ${JSON.stringify(name)} (npm run ops -- help lists them)`);
    return 2;
  }
  io.out(`${found.name}: ${found.summary}`);
  io.out(`usage: ${found.usage}`);
  return 0;
}

async function main(argv: readonly string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') return help(args[0]);
  const found = byName.get(name);
  if (found === undefined) {
    io.err(`ops: no command ${JSON.stringify(name)} (npm run ops -- help lists them)`);
    return 2;
  }
  return found.run(args, io);
}

const code = await main(process.argv.slice(2));
open.sealing?.close();
open.redis?.disconnect();
await open.database?.close();
await open.supabase?.end({ timeout: 5 });
await open.reconcile?.close();
process.exit(code);
