/**
 * Everything the indexer reads and writes in Postgres, as plain functions taking `sql` or a
 * transaction first. Multi-row writes go through `unnest(...)` so a whole range is one statement.
 * Numeric values travel as decimal strings and are cast in SQL, so nothing passes through a double.
 */
import type postgres from 'postgres';
import type { Address, Hex } from 'viem';
import { LIMITS } from '../../shared/chain/limits.ts';
import type { PriceRow } from '../../shared/db/queries/chain.ts';

export type Sql = postgres.Sql | postgres.TransactionSql;

export interface BlockRef {
  number: bigint;
  hash: Hex;
}

export interface BlockHeader extends BlockRef {
  parentHash: Hex;
  timestamp: bigint;
}

/** Where a log sits on the chain and what it is (decoded or stored). */
export interface ChainLog {
  blockNumber: bigint;
  blockHash: Hex;
  logIndex: number;
  transactionHash: Hex;
  address: Address;
  eventName: string;
}

/** One chain log as stored in chain_events (args in JSON form: integers as decimal strings). */
export interface EventRecord extends ChainLog {
  chainId: number;
  args: Record<string, string | number | boolean>;
  userId: string | null;
  applied: boolean;
}

// ── Locks ──────────────────────────────────────────────────────────────────────────────────────

// ── Cursor and blocks ──────────────────────────────────────────────────────────────────────────

export async function readCursor(sql: Sql, id: string): Promise<BlockRef | null> {
  const [row] = await sql<{ block_number: string; block_hash: string }[]>`
    select block_number::text, block_hash from indexer_cursors where id = ${id}`;
  return row === undefined ? null : { number: BigInt(row.block_number), hash: row.block_hash as Hex };
}

export async function writeCursor(sql: Sql, id: string, chainId: number, block: BlockRef): Promise<void> {
  await sql`
    insert into indexer_cursors (id, chain_id, block_number, block_hash, updated_at)
    values (${id}, ${chainId}, ${block.number.toString()}::bigint, ${block.hash}, now())
    on conflict (id) do update set block_number = excluded.block_number, block_hash = excluded.block_hash,
      updated_at = now()`;
}

export async function insertBlocks(sql: Sql, chainId: number, blocks: readonly BlockHeader[]): Promise<void> {
  if (blocks.length === 0) return;
  await sql`
    insert into chain_blocks (chain_id, number, hash, parent_hash, timestamp)
    select ${chainId}, n, h, p, t
    from unnest(${blocks.map((b) => b.number.toString())}::bigint[], ${blocks.map((b) => b.hash)}::text[],
      ${blocks.map((b) => b.parentHash)}::text[], ${blocks.map((b) => b.timestamp.toString())}::bigint[])
      as x(n, h, p, t)
    on conflict (chain_id, number) do update set hash = excluded.hash, parent_hash = excluded.parent_hash,
      timestamp = excluded.timestamp`;
}

/**
 * Blocks remembered at or above `fromNumber`, newest first (the reorg walk-back reads them). Ordered by
 * the column, not by the text the select names `number`: as text, 99 sorts above 105, and the walk-back
 * took an older block for the common ancestor whenever the window crossed a power of ten (it undid and
 * re-applied canonical events, whose Redis and ledger moves are once per log: docs/chaos.md, chain bug 1).
 */
export async function recentBlocks(sql: Sql, chainId: number, fromNumber: bigint): Promise<BlockRef[]> {
  const rows = await sql<{ number: string; hash: string }[]>`
    select b.number::text as number, b.hash from chain_blocks b
    where b.chain_id = ${chainId} and b.number >= ${fromNumber.toString()}::bigint order by b.number desc`;
  return rows.map((r) => ({ number: BigInt(r.number), hash: r.hash as Hex }));
}

export async function deleteBlocksAbove(sql: Sql, chainId: number, number: bigint): Promise<void> {
  await sql`delete from chain_blocks where chain_id = ${chainId} and number > ${number.toString()}::bigint`;
}

/** Forgets blocks below `number` (they are beyond any reorg the indexer will follow). */
export async function pruneBlocks(sql: Sql, chainId: number, number: bigint): Promise<void> {
  await sql`delete from chain_blocks where chain_id = ${chainId} and number < ${number.toString()}::bigint`;
}

// ── Events ─────────────────────────────────────────────────────────────────────────────────────

/** COPY text-format escaping: backslash, tab, newline and carriage return. */
function copyEscape(value: string): string {
  return /[\\\t\n\r]/.test(value)
    ? value.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r')
    : value;
}

const copyPrefixes = new WeakMap<EventRecord, string>();

/** Builds each record's COPY line up to the columns decided inside the transaction (user, applied). */
export function prepareForInsert(events: readonly EventRecord[]): void {
  for (const e of events) {
    if (copyPrefixes.has(e)) continue;
    copyPrefixes.set(
      e,
      `${e.chainId}\t${e.blockHash}\t${e.logIndex}\t${e.blockNumber}\t${e.transactionHash}\t${e.address}\t` +
        `${copyEscape(e.eventName)}\t${copyEscape(JSON.stringify(e.args))}\t`,
    );
  }
}

/**
 * Inserts a range's events with COPY (the fastest way into Postgres). There is no ON CONFLICT: a range
 * is committed once, with its cursor, so a duplicate means a second writer, and the unique violation
 * aborts the transaction loudly. Returns how many rows were written.
 */
export async function insertEvents(sql: Sql, events: readonly EventRecord[]): Promise<number> {
  if (events.length === 0) return 0;
  prepareForInsert(events);
  const appliedAt = new Date().toISOString();
  for (let i = 0; i < events.length; i += LIMITS.rowsPerStatementMax) {
    const chunk = events.slice(i, i + LIMITS.rowsPerStatementMax);
    let text = '';
    for (const e of chunk) {
      text += `${copyPrefixes.get(e)}${e.userId ?? '\\N'}\t${e.applied ? appliedAt : '\\N'}\n`;
    }
    const writable = await sql`
      copy chain_events (chain_id, block_hash, log_index, block_number, transaction_hash, address, event_name,
        args, user_id, applied_at) from stdin`.writable();
    await new Promise<void>((resolve, reject) => {
      writable.once('error', reject);
      writable.once('finish', () => resolve());
      writable.end(text);
    });
  }
  return events.length;
}

interface EventRow {
  chain_id: number;
  block_number: string;
  block_hash: string;
  log_index: number;
  transaction_hash: string;
  address: string;
  event_name: string;
  args: Record<string, string | number | boolean>;
  user_id: string | null;
  applied: boolean;
}

function toRecord(row: EventRow): EventRecord {
  return {
    chainId: row.chain_id,
    blockNumber: BigInt(row.block_number),
    blockHash: row.block_hash as Hex,
    logIndex: row.log_index,
    transactionHash: row.transaction_hash as Hex,
    address: row.address as Address,
    eventName: row.event_name,
    args: row.args,
    userId: row.user_id,
    applied: row.applied,
  };
}

const EVENT_COLUMNS = `chain_id, block_number::text, block_hash, log_index, transaction_hash, address, event_name,
  args, user_id::text, applied_at is not null as applied`;
/**
 * Chain order. Qualified: a bare `block_number` in ORDER BY names the selected text column, and as text
 * block 100 comes before block 99 (docs/chaos.md, chain bug 1).
 */
const EVENT_ORDER = 'chain_events.block_number, chain_events.log_index';

/** Events above `number`, in chain order (what a reorg to `number` orphans). */
export async function eventsAbove(sql: Sql, chainId: number, number: bigint): Promise<EventRecord[]> {
  const rows = await sql.unsafe<EventRow[]>(
    `select ${EVENT_COLUMNS} from chain_events where chain_id = $1 and block_number > $2::bigint
     order by ${EVENT_ORDER}`,
    [chainId, number.toString()],
  );
  return rows.map(toRecord);
}

/**
 * Events waiting for confirmations: not applied, in blocks [fromBlock, toBlock], either a linked
 * user's or a price (prices have no user). Chain order.
 */
export async function waitingEvents(
  sql: Sql,
  chainId: number,
  fromBlock: bigint,
  toBlock: bigint,
): Promise<EventRecord[]> {
  if (toBlock < fromBlock) return [];
  const rows = await sql.unsafe<EventRow[]>(
    `select ${EVENT_COLUMNS} from chain_events
     where chain_id = $1 and block_number between $2::bigint and $3::bigint and applied_at is null
       and (user_id is not null or event_name = 'AnswerUpdated')
     order by ${EVENT_ORDER}`,
    [chainId, fromBlock.toString(), toBlock.toString()],
  );
  return rows.map(toRecord);
}

/** A user's unapplied events before a position in the chain (a liquidation applies them first). */
export async function waitingEventsOfUserBefore(
  sql: Sql,
  chainId: number,
  userId: string,
  fromBlock: bigint,
  before: { blockNumber: bigint; logIndex: number },
): Promise<EventRecord[]> {
  const rows = await sql.unsafe<EventRow[]>(
    `select ${EVENT_COLUMNS} from chain_events
     where chain_id = $1 and user_id = $2::uuid and applied_at is null and block_number >= $3::bigint
       and (block_number, log_index) < ($4::bigint, $5::int)
     order by ${EVENT_ORDER}`,
    [chainId, userId, fromBlock.toString(), before.blockNumber.toString(), before.logIndex],
  );
  return rows.map(toRecord);
}

/** Events of wallets not yet attributed to a user (what linking a wallet adopts). */
export async function unattributedEventsOf(
  sql: Sql,
  chainId: number,
  wallet: Address,
): Promise<EventRecord[]> {
  const rows = await sql.unsafe<EventRow[]>(
    `select ${EVENT_COLUMNS} from chain_events
     where chain_id = $1 and user_id is null and args->>'user' = $2
     order by ${EVENT_ORDER}`,
    [chainId, wallet.toLowerCase()],
  );
  return rows.map(toRecord);
}

export async function setEventsUser(
  sql: Sql,
  chainId: number,
  keys: readonly { blockHash: Hex; logIndex: number }[],
  userId: string,
): Promise<void> {
  if (keys.length === 0) return;
  await sql`
    update chain_events e set user_id = ${userId}::uuid
    from unnest(${keys.map((k) => k.blockHash)}::text[], ${keys.map((k) => k.logIndex)}::int[]) as x(bh, li)
    where e.chain_id = ${chainId} and e.block_hash = x.bh and e.log_index = x.li`;
}

export async function markApplied(
  sql: Sql,
  chainId: number,
  keys: readonly { blockHash: Hex; logIndex: number }[],
): Promise<void> {
  if (keys.length === 0) return;
  await sql`
    update chain_events e set applied_at = now()
    from unnest(${keys.map((k) => k.blockHash)}::text[], ${keys.map((k) => k.logIndex)}::int[]) as x(bh, li)
    where e.chain_id = ${chainId} and e.block_hash = x.bh and e.log_index = x.li and e.applied_at is null`;
}

export async function deleteEventsAbove(sql: Sql, chainId: number, number: bigint): Promise<number> {
  const rows = await sql`
    delete from chain_events where chain_id = ${chainId} and block_number > ${number.toString()}::bigint`;
  return rows.count;
}

// ── Wallets and assets ─────────────────────────────────────────────────────────────────────────

// ── Positions (credit accounts are shared: shared/db/queries/credit-accounts.ts) ──────────────────────

export interface PositionDelta {
  userId: string;
  assetId: string;
  collateralDelta: bigint;
  pendingDelta: bigint;
}

/**
 * Adds deltas to positions. Missing rows are created at zero first, because a CHECK constraint is
 * evaluated on the row an INSERT proposes, before ON CONFLICT turns it into an update.
 */
export async function addPositionDeltas(sql: Sql, deltas: readonly PositionDelta[]): Promise<void> {
  if (deltas.length === 0) return;
  const users = deltas.map((d) => d.userId);
  const assets = deltas.map((d) => d.assetId);
  await sql`
    insert into positions (user_id, asset_id)
    select u, a from unnest(${users}::uuid[], ${assets}::text[]) as x(u, a)
    on conflict do nothing`;
  await sql`
    update positions p set collateral_base = p.collateral_base + x.c, pending_withdrawal_base =
      p.pending_withdrawal_base + x.w, updated_at = now()
    from unnest(${users}::uuid[], ${assets}::text[], ${deltas.map((d) => d.collateralDelta.toString())}::text[]::numeric[],
      ${deltas.map((d) => d.pendingDelta.toString())}::text[]::numeric[]) as x(u, a, c, w)
    where p.user_id = x.u and p.asset_id = x.a`;
}

// ── Prices ─────────────────────────────────────────────────────────────────────────────────────

/** What judging a new oracle round needs per asset (apply/effects.ts `judgeRound`). */
export interface PriceSanityState {
  assetId: string;
  answerMin: bigint;
  answerMax: bigint;
  deviationMaxBps: bigint;
  futureSkewS: number;
  /** The last accepted round (applied, or waiting for its confirmations): the deviation reference. */
  reference: { roundId: bigint; answer: bigint; updatedAtS: bigint } | null;
  /** The round just before the range (any verdict): a held rise it may confirm. */
  previous: { roundId: bigint; answer: bigint; updatedAtS: bigint } | null;
}

/**
 * Oracle sanity state per asset at the start of a range (`fromBlock`). The reference is the newer of
 * the newest positive `prices` row (held-back out-of-bounds rounds are stored with answer 0) and the
 * newest round still waiting for confirmations (waiting rounds sit within `waitingFromBlock`..).
 * The previous round is the feed's last stored round before the range: a backward scan of
 * chain_events_block_idx that stops at the first match (feeds publish at least every heartbeat).
 */
export async function priceSanityState(
  sql: Sql,
  chainId: number,
  aggregators: ReadonlyMap<Address, string>,
  fromBlock: bigint,
  waitingFromBlock: bigint,
): Promise<Map<string, PriceSanityState>> {
  if (aggregators.size === 0) return new Map();
  const addresses = [...aggregators.keys()];
  const assetIds = addresses.map((a) => aggregators.get(a) as string);
  const rows = await sql<
    {
      asset_id: string;
      answer_min: string;
      answer_max: string;
      deviation_bps: number;
      skew_s: number;
      ref_round: string | null;
      ref_answer: string | null;
      ref_s: string | null;
      wait_round: string | null;
      wait_answer: string | null;
      wait_s: string | null;
      prev_round: string | null;
      prev_answer: string | null;
      prev_s: string | null;
    }[]
  >`
    select x.asset_id, a.price_answer_min::text as answer_min, a.price_answer_max::text as answer_max,
      a.price_deviation_max_bps as deviation_bps, a.price_future_skew_s as skew_s,
      r.round_id::text as ref_round, r.answer::text as ref_answer,
      extract(epoch from r.updated_at)::bigint::text as ref_s,
      w.args->>'roundId' as wait_round, w.args->>'current' as wait_answer, w.args->>'updatedAt' as wait_s,
      p.args->>'roundId' as prev_round, p.args->>'current' as prev_answer, p.args->>'updatedAt' as prev_s
    from unnest(${addresses as string[]}::text[], ${assetIds}::text[]) as x(address, asset_id)
    join assets a on a.id = x.asset_id
    left join lateral (
      select round_id, answer, updated_at from prices
      where prices.asset_id = x.asset_id and prices.answer > 0 order by round_id desc limit 1
    ) r on true
    left join lateral (
      select args from chain_events e
      where e.chain_id = ${chainId} and e.block_number >= ${waitingFromBlock.toString()}::bigint
        and e.address = x.address and e.event_name = 'AnswerUpdated' and e.applied_at is null
      order by e.block_number desc, e.log_index desc limit 1
    ) w on true
    left join lateral (
      select args from chain_events e
      where e.chain_id = ${chainId} and e.block_number < ${fromBlock.toString()}::bigint
        and e.address = x.address and e.event_name = 'AnswerUpdated'
      order by e.block_number desc, e.log_index desc limit 1
    ) p on true`;
  const round = (id: string | null, answer: string | null, s: string | null) =>
    id === null || answer === null || s === null
      ? null
      : { roundId: BigInt(id), answer: BigInt(answer), updatedAtS: BigInt(s) };
  return new Map(
    rows.map((r) => {
      const applied = round(r.ref_round, r.ref_answer, r.ref_s);
      const waiting = round(r.wait_round, r.wait_answer, r.wait_s);
      const reference =
        applied === null
          ? waiting
          : waiting === null || waiting.roundId < applied.roundId
            ? applied
            : waiting;
      return [
        r.asset_id,
        {
          assetId: r.asset_id,
          answerMin: BigInt(r.answer_min),
          answerMax: BigInt(r.answer_max),
          deviationMaxBps: BigInt(r.deviation_bps),
          futureSkewS: r.skew_s,
          reference,
          previous: round(r.prev_round, r.prev_answer, r.prev_s),
        },
      ];
    }),
  );
}

export async function upsertPrices(sql: Sql, rows: readonly PriceRow[]): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    insert into prices (asset_id, round_id, answer, updated_at, block_number)
    select a, r, v, to_timestamp(t), b
    from unnest(${rows.map((p) => p.assetId)}::text[], ${rows.map((p) => p.roundId.toString())}::text[]::numeric[],
      ${rows.map((p) => p.answer.toString())}::text[]::numeric[], ${rows.map((p) => p.updatedAtS.toString())}::bigint[],
      ${rows.map((p) => p.blockNumber.toString())}::bigint[]) as x(a, r, v, t, b)
    on conflict (asset_id, round_id) do update set answer = excluded.answer, updated_at = excluded.updated_at,
      block_number = excluded.block_number`;
}

export async function deletePrices(
  sql: Sql,
  rows: readonly { assetId: string; roundId: bigint; blockNumber: bigint }[],
): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    delete from prices p using unnest(${rows.map((r) => r.assetId)}::text[],
      ${rows.map((r) => r.roundId.toString())}::text[]::numeric[], ${rows.map((r) => r.blockNumber.toString())}::bigint[])
      as x(a, r, b)
    where p.asset_id = x.a and p.round_id = x.r and p.block_number = x.b`;
}

// ── Settlements and ledger ─────────────────────────────────────────────────────────────────────

export interface SettlementRow {
  ref: string;
  userId: string;
  amountCents: bigint;
  amountUsdc: bigint;
  status: 'pending' | 'sent' | 'confirmed' | 'failed';
}

export async function settlementsByRef(
  sql: Sql,
  refs: readonly string[],
): Promise<Map<string, SettlementRow>> {
  if (refs.length === 0) return new Map();
  const rows = await sql<
    {
      ref: string;
      user_id: string;
      amount_cents: string;
      amount_usdc: string;
      status: SettlementRow['status'];
    }[]
  >`
    select ref, user_id::text, amount_cents::text, amount_usdc::text, status from settlements
    where ref = any(${[...refs]}::text[])`;
  return new Map(
    rows.map((r) => [
      r.ref,
      {
        ref: r.ref,
        userId: r.user_id,
        amountCents: BigInt(r.amount_cents),
        amountUsdc: BigInt(r.amount_usdc),
        status: r.status,
      },
    ]),
  );
}

export async function setSettlementStatus(
  sql: Sql,
  refs: readonly string[],
  status: SettlementRow['status'],
  onlyFrom: SettlementRow['status'][],
): Promise<void> {
  if (refs.length === 0) return;
  await sql`
    update settlements set status = ${status}, updated_at = now()
    where ref = any(${[...refs]}::text[]) and status = any(${onlyFrom}::text[])`;
}

export interface RefundRow {
  ref: string;
  userId: string;
  amountCents: bigint;
  amountUsdc: bigint;
}

/** Refunds the settlement worker sends on-chain (`chain_refunds`), by on-chain ref. */
export async function refundsByRef(sql: Sql, refs: readonly string[]): Promise<Map<string, RefundRow>> {
  if (refs.length === 0) return new Map();
  const rows = await sql<{ ref: string; user_id: string; amount_cents: string; amount_usdc: string }[]>`
    select ref, user_id::text, amount_cents::text, amount_usdc::text from chain_refunds
    where ref = any(${[...refs]}::text[])`;
  return new Map(
    rows.map((r) => [
      r.ref,
      {
        ref: r.ref,
        userId: r.user_id,
        amountCents: BigInt(r.amount_cents),
        amountUsdc: BigInt(r.amount_usdc),
      },
    ]),
  );
}

export async function setRefundStatus(
  sql: Sql,
  refs: readonly string[],
  status: SettlementRow['status'],
  onlyFrom: SettlementRow['status'][],
): Promise<void> {
  if (refs.length === 0) return;
  await sql`
    update chain_refunds set status = ${status}, updated_at = now()
    where ref = any(${[...refs]}::text[]) and status = any(${onlyFrom}::text[])`;
}
