/**
 * `npm run ops -- <command> [args]` — the operator CLI. `npm run ops -- help` lists the commands,
 * `npm run ops -- help <command>` shows one's usage. Every mutating command needs `--reason "..."`
 * and records who (`--actor`, default the OS user) and why in the audit log.
 *
 * Exit status: 0 done, 1 failed, 2 bad input (one clear line on stderr).
 * Commands: scripts/ops/controls.ts (program controls, docs/controls.md), scripts/ops/dead-letters.ts
 * (the ledger writer's dead letters, docs/ledger.md).
 */
import { configFromProcess } from '../shared/config.ts';
import type { ControlsDeps } from '../shared/controls/program.ts';
import { createDatabase, type Database } from '../shared/db/client.ts';
import { createRedis, type Redis } from '../shared/redis/client.ts';
import type { OpsCommand, OpsIo } from './ops/command.ts';
import { controlsCommands } from './ops/controls.ts';
import { deadLetterCommands } from './ops/dead-letters.ts';

const io: OpsIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

// Connections open on first use, so `help` and bad input need neither Postgres nor Redis.
const open: { database?: Database; redis?: Redis; deps?: ControlsDeps } = {};
async function openDeps(): Promise<ControlsDeps> {
  if (open.deps === undefined) {
    const config = configFromProcess();
    const database = createDatabase({
      url: config.DATABASE_URL,
      poolMax: 2,
      statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
      applicationName: 'ops',
    });
    const redis = createRedis({ url: config.REDIS_URL, connectionName: 'ops', commandTimeoutMs: 5_000 });
    Object.assign(open, {
      database,
      redis,
      deps: { sql: database.sql, redis, prefix: config.REDIS_KEY_PREFIX },
    });
  }
  return open.deps as ControlsDeps;
}

const commands: OpsCommand[] = [...controlsCommands({ deps: openDeps }), ...deadLetterCommands];
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
open.redis?.disconnect();
await open.database?.close();
process.exit(code);
