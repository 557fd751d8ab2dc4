/**
 * Operator commands for the ledger writer's dead letters (the logic is in
 * shared/outbox/dead-letters.ts):
 *   dead-letters [--limit N]                                   list them, oldest first
 *   dead-letter <id>                                           show one (its record, never the raw event)
 *   replay-dead-letter <id> --reason "..." [--actor name]      apply it to Postgres once, then remove it
 */
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { replayDeadLetter } from '../../ledger-writer/dead-letter-replay.ts';
import { configFromProcess } from '../../shared/config.ts';
import { createDatabase, type Sql } from '../../shared/db/client.ts';
import {
  type DeadLetter,
  isStreamId,
  listDeadLetters,
  readDeadLetter,
} from '../../shared/outbox/dead-letters.ts';
import { outboxLimits } from '../../shared/outbox/limits.ts';
import { createServiceRedis, type Redis } from '../../shared/redis/client.ts';
import type { OpsCommand, OpsIo } from './command.ts';

export interface DeadLetterOpsDeps {
  redis: Redis;
  sql: Sql;
  prefix: string;
}

/** Opens what a command needs; `close` releases it. */
export type Connect = () => Promise<{ deps: DeadLetterOpsDeps; close(): Promise<void> }>;

const REASON_CHARS_MAX = 500;
const ACTOR_CHARS_MAX = 100;

class BadInput extends Error {}

type ParseOptions = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>['options']>;

function parse(args: readonly string[], options: ParseOptions) {
  try {
    return parseArgs({ args: [...args], options: options ?? {}, allowPositionals: true, strict: true });
  } catch (error) {
    throw new BadInput((error as Error).message.split('\n')[0]);
  }
}

function oneId(positionals: readonly string[]): string {
  if (positionals.length !== 1) throw new BadInput('expected exactly one dead-letter id');
  const id = positionals[0]!;
  if (!isStreamId(id)) throw new BadInput(`not a dead-letter id: ${JSON.stringify(id.slice(0, 40))}`);
  return id;
}

export function formatAge(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600)}h`;
}

const cents = (v: bigint | null) => (v === null ? '?' : v.toString());

/** Runs `body` with connections, mapping bad input to exit 2 and failures to exit 1. */
async function guarded(io: OpsIo, connect: Connect, body: (deps: DeadLetterOpsDeps) => Promise<number>) {
  let opened: Awaited<ReturnType<Connect>> | null = null;
  try {
    opened = await connect();
    return await body(opened.deps);
  } catch (error) {
    if (error instanceof BadInput) {
      io.err(error.message);
      return 2;
    }
    const e = error as { code?: unknown; message?: unknown };
    io.err(`failed: ${typeof e?.code === 'string' ? `${e.code} ` : ''}${String(e?.message ?? error)}`);
    return 1;
  } finally {
    await opened?.close();
  }
}

function recordView(letter: DeadLetter): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(letter.fields)) {
    if (k !== 'r') out[k] = v;
  }
  try {
    const record = JSON.parse(letter.fields['r'] ?? '') as Record<string, unknown>;
    const { event, ...rest } = record;
    out['record'] = {
      ...rest,
      event: typeof event === 'string' ? `<${event.length} chars, not shown>` : event,
    };
  } catch {
    out['record'] = `<not JSON, ${(letter.fields['r'] ?? '').length} chars, not shown>`;
  }
  return out;
}

export function createDeadLetterCommands(connect: Connect): OpsCommand[] {
  const list: OpsCommand = {
    name: 'dead-letters',
    summary: "List the ledger writer's dead letters (outbox entries Postgres did not take), oldest first",
    usage: 'npm run ops -- dead-letters [--limit N]',
    mutating: false,
    run: (args, io) =>
      guarded(io, connect, async ({ redis, prefix }) => {
        const { values, positionals } = parse(args, { limit: { type: 'string' } });
        if (positionals.length > 0) throw new BadInput('dead-letters takes no arguments');
        const limit =
          values['limit'] === undefined ? outboxLimits.deadLettersListedMax : Number(values['limit']);
        if (!Number.isInteger(limit) || limit < 1 || limit > outboxLimits.deadLettersListedMax)
          throw new BadInput(`--limit must be an integer in 1..${outboxLimits.deadLettersListedMax}`);
        const { letters, total } = await listDeadLetters(redis, prefix, { countMax: limit });
        const money = letters.filter((l) => l.missesMoney).length;
        io.out(`${total} dead letter(s)${total > letters.length ? `, ${letters.length} shown` : ''}`);
        if (letters.length === 0) return 0;
        io.out(`${money} shown miss their money in Postgres (their users' caches are kept from rebuilds)`);
        io.out(['id', 'problem', 'kind', 'user', 'amount_cents', 'age', 'error'].join('\t'));
        for (const l of letters) {
          io.out(
            [
              l.id,
              l.problem,
              l.kind,
              l.userId ?? '-',
              cents(l.amountCents),
              formatAge(l.ageMs),
              l.error.replace(/\s+/g, ' ').slice(0, 200),
            ].join('\t'),
          );
        }
        return 0;
      }),
  };

  const show: OpsCommand = {
    name: 'dead-letter',
    summary: 'Show one dead letter: where it came from, why it failed, its record (never the raw event)',
    usage: 'npm run ops -- dead-letter <id>',
    mutating: false,
    run: (args, io) =>
      guarded(io, connect, async ({ redis, prefix }) => {
        const { positionals } = parse(args, {});
        const id = oneId(positionals);
        const letter = await readDeadLetter(redis, prefix, id);
        if (letter === null) throw new BadInput(`no dead letter ${id}`);
        const view = {
          id: letter.id,
          source: letter.source,
          problem: letter.problem,
          kind: letter.kind,
          userId: letter.userId,
          eventId: letter.eventId,
          amountCents: cents(letter.amountCents),
          missesMoney: letter.missesMoney,
          age: formatAge(letter.ageMs),
          error: letter.error,
          entry: recordView(letter),
        };
        for (const line of JSON.stringify(view, null, 2).split('\n')) io.out(line);
        return 0;
      }),
  };

  const replay: OpsCommand = {
    name: 'replay-dead-letter',
    summary: 'Apply a dead letter to Postgres once (after its cause is fixed), audit it, and remove it',
    usage: 'npm run ops -- replay-dead-letter <id> --reason "..." [--actor name]',
    mutating: true,
    run: (args, io) =>
      guarded(io, connect, async ({ redis, sql, prefix }) => {
        const { values, positionals } = parse(args, {
          reason: { type: 'string' },
          actor: { type: 'string' },
        });
        const id = oneId(positionals);
        const reason = typeof values['reason'] === 'string' ? values['reason'].trim() : '';
        if (reason === '') throw new BadInput('--reason "..." is required (why this replay is safe now)');
        if (reason.length > REASON_CHARS_MAX)
          throw new BadInput(`--reason is longer than ${REASON_CHARS_MAX} characters`);
        const actor =
          typeof values['actor'] === 'string' ? values['actor'].trim() : (userInfo().username ?? '');
        if (actor === '' || actor.length > ACTOR_CHARS_MAX)
          throw new BadInput(`--actor must be 1..${ACTOR_CHARS_MAX} characters`);
        const result = await replayDeadLetter({ redis, sql, prefix, id, actor, reason });
        switch (result.state) {
          case 'replayed':
            io.out(
              `replayed ${id}: ${result.applied === 1 ? 'written to Postgres' : 'already in Postgres, nothing written'}; removed from the dead letters`,
            );
            return 0;
          case 'already_replayed':
            io.out(`${id} was replayed by ${result.actor} at ${result.at.toISOString()}: nothing to do`);
            return 0;
          case 'not_found':
            throw new BadInput(`no dead letter ${id}`);
          case 'unreplayable':
            io.err(`${id} cannot be replayed: its entry is invalid (${result.error})`);
            return 1;
          case 'failed':
            io.err(
              `${id} still fails${result.moneyWritten ? ' (its money is now written; only the archive failed)' : ''}: ${result.error}`,
            );
            return 1;
        }
      }),
  };

  return [list, show, replay];
}

/** Connections from the process environment (shared/config.ts), for `npm run ops`. */
const connectFromEnv: Connect = async () => {
  const config = configFromProcess();
  const database = createDatabase({ url: config.DATABASE_URL, poolMax: 2, applicationName: 'ops' });
  const redis = createServiceRedis(config, { connectionName: 'ops' });
  return {
    deps: { redis, sql: database.sql, prefix: config.REDIS_KEY_PREFIX },
    async close() {
      redis.disconnect();
      await database.close();
    },
  };
};

export const deadLetterCommands: OpsCommand[] = createDeadLetterCommands(connectFromEnv);
