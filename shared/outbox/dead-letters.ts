/**
 * Dead letters: outbox entries the ledger writer could not write to Postgres. Listing, inspecting and
 * replaying them (the operator commands in scripts/ops/dead-letters.ts are a thin face on this).
 *
 * A dead letter is never undone in Redis: the hot path already acted on it (a hold granted, a capture
 * booked), so its effect stays in the cache and only Postgres lacks it. Its `problem` says what is
 * missing:
 * - `failed`: Postgres rejected the money transaction (a check or foreign-key violation, bad data);
 * - `invalid`: the entry did not parse, nothing of it is written;
 * - `archive`: only the raw event (card_events) failed; its money, if any, is written.
 * A dead letter whose money is missing (`failed` or `invalid`, for a known user) is also a member of
 * the user's dead-letter set (keys.ts userDeadLettersKey), which keeps every rebuild of that user's
 * cache from Postgres away (shared/redis/rebuild-guard.ts) until it is replayed.
 *
 * Replay = apply the entry to Postgres through the writer's own parse and apply (exactly once: the
 * natural keys of apply.ts), record it in the audit log with who and why, then drop it from the user's
 * set and from the dead-letter stream. Replaying again finds the audit row and changes nothing.
 */

import { OUTBOX_FIELDS } from '../policy/redis-fields.ts';
import type { Redis } from '../redis/client.ts';
import { deadLetterKey, userDeadLettersKey } from '../redis/keys.ts';
import { outboxLimits } from './limits.ts';
import type { RawEntry } from './records.ts';

/**
 * `invalid`: the entry did not parse; `failed`: Postgres rejected its money; `archive`: only its raw
 * event failed (the money is written); `too_large` (QStash mode): too large to relay, never written.
 */
export type DeadLetterProblem = 'invalid' | 'failed' | 'archive' | 'too_large';
const PROBLEMS: readonly DeadLetterProblem[] = ['invalid', 'failed', 'archive', 'too_large'];

/** What a dead letter is about, read from its record as far as it parses (never its raw event). */
export interface EntrySummary {
  kind: 'decision' | 'lifecycle' | 'unknown';
  userId: string | null;
  eventId: string | null;
  /** The money it moved in Redis: a decision's granted hold, or a lifecycle's unsettled (else hold) change. */
  amountCents: bigint | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const CENTS = /^-?\d{1,16}$/;

/** Best effort: an entry that does not parse still names its user when its JSON says so. */
export function summarize(fields: Readonly<Record<string, string>>): EntrySummary {
  let record: Record<string, unknown> = {};
  try {
    const value: unknown = JSON.parse(fields[OUTBOX_FIELDS.record] ?? '');
    if (value !== null && typeof value === 'object') record = value as Record<string, unknown>;
  } catch {
    // Not JSON: kind and user unknown.
  }
  const kind = record['kind'] === 'decision' || record['kind'] === 'lifecycle' ? record['kind'] : 'unknown';
  const userId =
    typeof record['userId'] === 'string' && UUID.test(record['userId']) ? record['userId'] : null;
  const eventId = typeof record['eventId'] === 'string' ? record['eventId'].slice(0, 255) : null;
  const cents = (name: string) => {
    const v = fields[name];
    return v !== undefined && CENTS.test(v) ? BigInt(v) : null;
  };
  let amountCents: bigint | null = null;
  if (kind === 'decision') amountCents = cents(OUTBOX_FIELDS.amountCents);
  else if (kind === 'lifecycle') {
    const unsettled = cents(OUTBOX_FIELDS.unsettledDeltaCents);
    amountCents = unsettled !== null && unsettled !== 0n ? unsettled : cents(OUTBOX_FIELDS.holdDeltaCents);
  }
  return { kind, userId, eventId, amountCents };
}

/** True when Postgres lacks money Redis has because of this dead letter (see the header). */
export function missesMoney(problem: DeadLetterProblem, summary: EntrySummary): boolean {
  if (problem === 'archive' || summary.userId === null) return false;
  // An entry that did not parse may have moved anything; one that did moved what its amount says.
  return summary.kind === 'unknown' || summary.amountCents === null || summary.amountCents !== 0n;
}

/**
 * Dead-letters one outbox entry, the one way every writer does it (the stream writer, the QStash
 * receiver and relay): the user's dead-letter set first when Postgres misses its money, then the
 * dead-letter stream. Until the caller deletes the entry from its outbox stream, that stream names the
 * user; from then on the set does, so no rebuild from Postgres slips in between (rebuild-guard.ts).
 */
export async function appendDeadLetter(
  redis: Redis,
  prefix: string,
  raw: RawEntry,
  error: string,
  problem: DeadLetterProblem,
): Promise<void> {
  const summary = summarize(raw.fields);
  if (missesMoney(problem, summary) && summary.userId !== null)
    await redis.sadd(userDeadLettersKey(prefix, summary.userId), deadLetterMember(raw.stream, raw.id));
  await redis.xadd(deadLetterKey(prefix), '*', ...deadLetterFields(raw, error, problem, summary));
}

/** The member of the user's dead-letter set for one outbox entry. */
export const deadLetterMember = (stream: string, id: string) => `${stream} ${id}`;

/**
 * The dead-letter stream entry for `raw`: where it came from, why, a summary for listing, and its
 * fields as read (prefixed `f:`), so a replay applies exactly what the hot path wrote.
 */
export function deadLetterFields(
  raw: RawEntry,
  error: string,
  problem: DeadLetterProblem,
  summary: EntrySummary,
): string[] {
  return [
    'stream',
    raw.stream,
    'id',
    raw.id,
    'error',
    error,
    'problem',
    problem,
    'kind',
    summary.kind,
    'user',
    summary.userId ?? '',
    'cents',
    summary.amountCents?.toString() ?? '',
    ...Object.entries(raw.fields).flatMap(([k, v]) => [`f:${k}`, v]),
  ];
}

export interface DeadLetter {
  /** The dead-letter stream's id of it (what the operator names). */
  id: string;
  /** The outbox entry it was: stream and id. */
  source: { stream: string; id: string };
  problem: DeadLetterProblem;
  kind: EntrySummary['kind'];
  userId: string | null;
  eventId: string | null;
  amountCents: bigint | null;
  /** True when Postgres lacks its money (the user's cache is kept from rebuilds until it is replayed). */
  missesMoney: boolean;
  error: string;
  /** Since the hot path wrote the entry (its outbox id's time). */
  ageMs: number;
  /** The outbox entry's fields, as read. */
  fields: Record<string, string>;
}

const idMs = (id: string) => Number(id.slice(0, id.indexOf('-')));

function toDeadLetter(id: string, flat: readonly string[], nowMs: number): DeadLetter {
  const meta: Record<string, string> = {};
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const k = flat[i]!;
    if (k.startsWith('f:')) fields[k.slice(2)] = flat[i + 1]!;
    else meta[k] = flat[i + 1]!;
  }
  const problem = PROBLEMS.find((p) => p === meta['problem']) ?? 'failed';
  const summary = summarize(fields);
  const source = { stream: meta['stream'] ?? '', id: meta['id'] ?? id };
  return {
    id,
    source,
    problem,
    kind: summary.kind,
    userId: summary.userId,
    eventId: summary.eventId,
    amountCents: summary.amountCents,
    missesMoney: missesMoney(problem, summary),
    error: meta['error'] ?? '',
    ageMs: Math.max(0, nowMs - (Number.isFinite(idMs(source.id)) ? idMs(source.id) : idMs(id))),
    fields,
  };
}

/** Oldest first, at most `countMax`; `total` is the stream's length. */
export async function listDeadLetters(
  redis: Redis,
  prefix: string,
  options: { countMax?: number; nowMs?: number } = {},
): Promise<{ letters: DeadLetter[]; total: number }> {
  const countMax = options.countMax ?? outboxLimits.deadLettersListedMax;
  const nowMs = options.nowMs ?? Date.now();
  const [entries, total] = await Promise.all([
    redis.xrange(deadLetterKey(prefix), '-', '+', 'COUNT', countMax),
    redis.xlen(deadLetterKey(prefix)),
  ]);
  return { letters: entries.map(([id, flat]) => toDeadLetter(id, flat, nowMs)), total };
}

/** A stream id as Redis writes them: `<ms>-<seq>`. */
export const isStreamId = (id: string) => /^\d{1,20}-\d{1,20}$/.test(id);

export async function readDeadLetter(
  redis: Redis,
  prefix: string,
  id: string,
  nowMs = Date.now(),
): Promise<DeadLetter | null> {
  if (!isStreamId(id)) return null;
  const [entry] = await redis.xrange(deadLetterKey(prefix), id, id);
  return entry === undefined ? null : toDeadLetter(entry[0], entry[1], nowMs);
}

/** `<SQLSTATE>: <message>` of an error, bounded; never the statement's parameters or detail. */
export function errorText(error: unknown): string {
  const e = error as { code?: unknown; message?: unknown } | null;
  const text = `${typeof e?.code === 'string' ? `${e.code}: ` : ''}${typeof e?.message === 'string' ? e.message : String(error)}`;
  return text.slice(0, outboxLimits.deadLetterErrorCharsMax);
}
