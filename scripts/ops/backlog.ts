/**
 * How far behind the asynchronous parts are:
 *
 *   outbox         per shard: entries not yet written to Postgres, entries delivered to a ledger writer
 *                  and not acknowledged, the oldest entry's age; the writer lag (the age of the oldest
 *                  entry of all shards — the writer deletes what it wrote, so this is what
 *                  `credana_ledger_lag_ms` measures) and the dead letters.
 *   indexer-head   each indexer cursor (financial database) against the chain head (CHAIN_RPC_URL).
 */
import type { Sql } from '../../shared/db/client.ts';
import { replyCode } from '../../shared/errors.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { deadLetterKey, OUTBOX_SHARDS, outboxKey } from '../../shared/redis/keys.ts';
import { expectPositionals, guarded, parseStrict } from './args.ts';
import type { OpsCommand } from './command.ts';
import { formatAge } from './dead-letters.ts';

export interface BacklogDeps {
  sql: Sql;
  redis: Redis;
  prefix: string;
  /** The chain id and head block number of CHAIN_RPC_URL. */
  chainHead(): Promise<{ chainId: number; blockNumber: bigint }>;
  now?: () => number;
}

export interface BacklogContext {
  deps(): Promise<BacklogDeps>;
}

/** The ledger writer's consumer group (ledger-writer/writer.ts CONSUMER_GROUP; backlog.test.ts checks they agree). */
export const WRITER_GROUP = 'ledger-writer';

/** Milliseconds since the epoch in a stream id (`<ms>-<seq>`). */
const streamIdMs = (id: string) => Number(id.slice(0, id.indexOf('-')));

export interface ShardBacklog {
  shard: number;
  entries: number;
  /** Delivered to a writer, not acknowledged; null when no writer has created its group yet. */
  pending: number | null;
  oldestMs: number | null;
}

/**
 * Reads every shard's stream length, pending count and oldest entry: one pipeline per shard (its keys
 * share the shard's slot, so on a Redis Cluster each goes to its shard's node), sent together.
 */
export async function readOutboxBacklog(redis: Redis, prefix: string): Promise<ShardBacklog[]> {
  const perShard = await Promise.all(
    Array.from({ length: OUTBOX_SHARDS }, async (_, shard) => {
      const key = outboxKey(prefix, shard);
      return (
        (await redis
          .pipeline()
          .xlen(key)
          .xrange(key, '-', '+', 'COUNT', 1)
          .xpending(key, WRITER_GROUP)
          .exec()) ?? []
      );
    }),
  );
  const replies = perShard.flat();
  const shards: ShardBacklog[] = [];
  for (let shard = 0; shard < OUTBOX_SHARDS; shard++) {
    const [lenErr, len] = replies[shard * 3] ?? [new Error('no reply'), null];
    if (lenErr !== null) throw lenErr;
    const [rangeErr, range] = replies[shard * 3 + 1] ?? [new Error('no reply'), null];
    if (rangeErr !== null) throw rangeErr;
    const [pendingErr, pendingReply] = replies[shard * 3 + 2] ?? [new Error('no reply'), null];
    // NOGROUP: the stream or the writer's group does not exist yet (no writer ever ran on this shard).
    if (pendingErr !== null && replyCode(pendingErr) !== 'NOGROUP') throw pendingErr;
    const oldestId = (range as [string, string[]][] | null)?.[0]?.[0];
    shards.push({
      shard,
      entries: Number(len),
      pending: pendingErr === null ? Number((pendingReply as unknown[])[0] ?? 0) : null,
      oldestMs: oldestId === undefined ? null : streamIdMs(oldestId),
    });
  }
  return shards;
}

export function backlogCommands(context: BacklogContext): OpsCommand[] {
  const outboxUsage = 'npm run ops -- outbox [--all]';
  const outbox: OpsCommand = {
    name: 'outbox',
    summary:
      'Outbox backlog per shard (entries, pending in the ledger writer, oldest), writer lag, dead letters',
    usage: outboxUsage,
    mutating: false,
    run: (args, io) =>
      guarded(io, 'outbox', outboxUsage, async () => {
        const { values, positionals } = parseStrict(args, { all: { type: 'boolean' } });
        expectPositionals(positionals, []);
        const deps = await context.deps();
        const now = (deps.now ?? Date.now)();
        const shards = await readOutboxBacklog(deps.redis, deps.prefix);
        const deadLetters = await deps.redis.xlen(deadLetterKey(deps.prefix));
        const entries = shards.reduce((sum, s) => sum + s.entries, 0);
        const pending = shards.reduce((sum, s) => sum + (s.pending ?? 0), 0);
        const oldest = shards
          .filter((s) => s.oldestMs !== null)
          .sort((a, b) => (a.oldestMs as number) - (b.oldestMs as number))[0];
        const lagMs = oldest === undefined ? 0 : Math.max(0, now - (oldest.oldestMs as number));
        io.out(
          `outbox: ${entries} entries not yet written to Postgres in ${OUTBOX_SHARDS} shards, ${pending} delivered to a writer and not acknowledged`,
        );
        io.out(
          `writer lag: ${oldest === undefined ? '0s (nothing waiting)' : `${formatAge(lagMs)} (${lagMs} ms; oldest entry in shard ${oldest.shard})`}`,
        );
        const noGroup = shards.filter((s) => s.pending === null).length;
        if (noGroup > 0) io.out(`no ledger writer group on ${noGroup} shard(s): no writer has started there`);
        io.out(`dead letters: ${deadLetters}${deadLetters > 0 ? ' (npm run ops -- dead-letters)' : ''}`);
        io.out(['shard', 'entries', 'pending', 'oldest_age'].join('\t'));
        for (const s of shards) {
          if (values['all'] !== true && s.entries === 0 && (s.pending ?? 0) === 0) continue;
          io.out(
            [
              String(s.shard).padStart(2, '0'),
              String(s.entries),
              s.pending === null ? '-' : String(s.pending),
              s.oldestMs === null ? '-' : formatAge(Math.max(0, now - s.oldestMs)),
            ].join('\t'),
          );
        }
        return 0;
      }),
  };

  const indexerUsage = 'npm run ops -- indexer-head';
  const indexer: OpsCommand = {
    name: 'indexer-head',
    summary: "The indexer's committed block against the chain head (CHAIN_RPC_URL)",
    usage: indexerUsage,
    mutating: false,
    run: (args, io) =>
      guarded(io, 'indexer-head', indexerUsage, async () => {
        const { positionals } = parseStrict(args, {});
        expectPositionals(positionals, []);
        const deps = await context.deps();
        const now = (deps.now ?? Date.now)();
        const cursors = await deps.sql<
          { id: string; chain_id: number; block_number: string; updated_at: Date }[]
        >`select id, chain_id, block_number::text, updated_at from indexer_cursors order by id`;
        let head: { chainId: number; blockNumber: bigint } | null = null;
        let headError = '';
        try {
          head = await deps.chainHead();
        } catch (error) {
          // The RPC URL can carry an API key (in its path): never print it.
          headError = (String((error as Error).message ?? error).split('\n')[0] ?? '').replace(
            /[a-z][a-z0-9+.-]*:\/\/\S+/gi,
            '<CHAIN_RPC_URL>',
          );
        }
        io.out(
          `chain head: ${head === null ? `unknown (the RPC did not answer: ${headError.slice(0, 160)})` : `block ${head.blockNumber} on chain ${head.chainId}`}`,
        );
        if (cursors.length === 0) io.out('indexer: no cursor (the indexer has not committed a block yet)');
        for (const c of cursors) {
          const at = BigInt(c.block_number);
          let behind = '';
          if (head !== null) {
            behind =
              head.chainId !== c.chain_id
                ? `; this cursor is for chain ${c.chain_id}, the RPC serves chain ${head.chainId}`
                : `; ${head.blockNumber > at ? head.blockNumber - at : 0n} block(s) behind the head`;
          }
          io.out(
            `indexer ${c.id}: block ${at} on chain ${c.chain_id}, committed ${formatAge(Math.max(0, now - c.updated_at.getTime()))} ago${behind}`,
          );
        }
        return head === null ? 1 : 0;
      }),
  };
  return [outbox, indexer];
}
