/**
 * The applied watermark of an outbox shard under QUEUE_DRIVER=qstash: the id of the last stream entry
 * of that shard whose effects the ledger writer's `/qstash` receiver committed (or dead-lettered).
 *
 * It is an invariant that the watermark only moves forward and only past an entry whose effects are
 * committed and whose predecessors in the stream are all at or below it: the receiver applies an entry
 * only when the watermark has reached the predecessor the relay named, and advances it after COMMIT.
 * So the watermark says "everything up to here is in Postgres, in stream order", which is what lets the
 * relay acknowledge and delete exactly those entries — never one that is only published.
 *
 * It lives in Redis next to its stream (same `{s:NNN}` hash tag, so one script can read it and trim the
 * stream, also on a Redis Cluster). It is not written in the effects' Postgres transaction: it need not
 * be, because applyBatch is idempotent by natural keys. A watermark that lags Postgres (the receiver
 * died between COMMIT and the advance, or Redis lost the key) only makes an applied entry be delivered
 * and applied again, which changes nothing and then advances the watermark.
 */
import type { Redis } from '../redis/client.ts';
import { luaScript, runScript } from '../redis/script.ts';

export function watermarkKey(stream: string): string {
  return `${stream}:applied`;
}

/** Parsed `<ms>-<seq>`; null when `id` is not a stream id. */
function parts(id: string): [bigint, bigint] | null {
  const match = /^(\d{1,20})-(\d{1,20})$/.exec(id);
  return match === null ? null : [BigInt(match[1]!), BigInt(match[2]!)];
}

/** Orders two stream ids as Redis does: negative when a < b, 0 when equal, positive when a > b. */
export function compareStreamIds(a: string, b: string): number {
  const x = parts(a);
  const y = parts(b);
  if (x === null || y === null) throw new Error(`not a stream id: ${x === null ? a : b}`);
  if (x[0] !== y[0]) return x[0] < y[0] ? -1 : 1;
  return x[1] === y[1] ? 0 : x[1] < y[1] ? -1 : 1;
}

/*
 * `newer(a, b)`: a > b for stream ids, compared on their decimal strings (no leading zeros), so exact
 * beyond the 2^53 a Lua number holds.
 */
const NEWER = `
local function num_gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function newer(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return num_gt(am, bm) end
  return num_gt(as, bs)
end
`;

/** KEYS[1] watermark; ARGV[1] id. Moves the watermark to id if that is forward; returns the watermark. */
const ADVANCE = luaScript(`${NEWER}
local current = redis.call('GET', KEYS[1])
if (not current) or newer(ARGV[1], current) then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return current`);

/**
 * KEYS[1] stream, KEYS[2] watermark; ARGV[1] group, ARGV[2] count. XACK + XDEL of the stream's entries
 * at or below the watermark (at most count); returns how many.
 */
const ACK_APPLIED = luaScript(`
local mark = redis.call('GET', KEYS[2])
if not mark then return 0 end
local entries = redis.call('XRANGE', KEYS[1], '-', mark, 'COUNT', tonumber(ARGV[2]))
if #entries == 0 then return 0 end
local ids = {}
for i, entry in ipairs(entries) do ids[i] = entry[1] end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
return #ids`);

/** The shard's watermark, or null when nothing was applied through QStash yet (or the key was lost). */
export async function readWatermark(redis: Redis, stream: string): Promise<string | null> {
  return redis.get(watermarkKey(stream));
}

/** Moves the watermark forward to `id` (never back); call only after `id`'s effects are committed. */
export async function advanceWatermark(redis: Redis, stream: string, id: string): Promise<string> {
  return runScript<string>(redis, ADVANCE, [watermarkKey(stream)], [id]);
}

/** Acknowledges and deletes up to `countMax` entries of `stream` that the watermark has passed. */
export async function ackApplied(
  redis: Redis,
  stream: string,
  group: string,
  countMax: number,
): Promise<number> {
  return runScript<number>(redis, ACK_APPLIED, [stream, watermarkKey(stream)], [group, countMax]);
}
