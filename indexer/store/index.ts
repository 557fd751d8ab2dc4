/**
 * Everything the indexer reads and writes in Postgres, as plain functions taking `sql` or a
 * transaction first. Multi-row writes go through `unnest(...)` so a whole range is one statement.
 * Numeric values travel as decimal strings and are cast in SQL, so nothing passes through a double.
 */
import type postgres from 'postgres';
import type { Address, Hex } from 'viem';
import { isTransactionPooled } from '../../shared/db/client.ts';
import { type AssetRiskRow, assetRiskOf } from '../../shared/db/queries/assets.ts';
import { LIMITS } from '../limits.ts';

export type Sql = postgres.Sql | postgres.TransactionSql;

/** Advisory lock keys (two-int form): the first names the lock, the second is the chain id. */
export const LOCK_INDEXER_SESSION = 7_431_100;
export const LOCK_CHAIN_APPLY = 7_431_101;
export const LOCK_SETTLEMENT_SESSION = 7_431_102;
export const LOCK_LIQUIDATOR_SESSION = 7_431_103;
export const LOCK_ANCHOR_SESSION = 7_431_104;

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

/**
 * Serialises everything that applies chain effects for one chain (range commits, wallet links), and
 * optionally sets the transaction's statement timeout in the same round trip.
 */
export async function lockChainApply(
  tx: postgres.TransactionSql,
  chainId: number,
  statementTimeoutMs?: number,
): Promise<void> {
  await tx`select pg_advisory_xact_lock(${LOCK_CHAIN_APPLY}::int, ${chainId}::int),
    case when ${statementTimeoutMs !== undefined}::bool
      then set_config('statement_timeout', ${String(statementTimeoutMs ?? 0)}, true) end`;
}

/**
 * Takes a session-level lock on a reserved connection so only one process of a kind runs per chain.
 * Returns a release function, or null when another process holds the lock. A killed process loses its
 * connection and so its lock.
 */
export async function tryExclusive(
  sql: postgres.Sql,
  lock: number,
  chainId: number,
): Promise<(() => Promise<void>) | null> {
  return (await tryExclusiveSession(sql, lock, chainId))?.release ?? null;
}

export interface ExclusiveSession {
  release(): Promise<void>;
  /**
   * True while the lock is still held: asks Postgres, on the lock's own connection, whether that
   * backend holds it. False when the connection was lost (a Postgres restart, a terminated backend, a
   * network cut): the lock died with it and another process may have taken it since.
   */
  held(): Promise<boolean>;
}

/** tryExclusive, plus a way to ask whether the lock is still held (ExclusiveSession.held). */
export async function tryExclusiveSession(
  sql: postgres.Sql,
  lock: number,
  chainId: number,
): Promise<ExclusiveSession | null> {
  // Behind a transaction pooler the lock would stay on a pooled server connection, and the next
  // client to borrow it (another worker of the same kind) would take it again: advisory locks are
  // re-entrant within one session.
  if (isTransactionPooled(sql)) {
    throw new Error(
      'this worker takes a session advisory lock: its DATABASE_URL must be direct or session-pooled, not ?pgbouncer=transaction',
    );
  }
  const conn = await sql.reserve();
  const [row] = await conn<
    { ok: boolean }[]
  >`select pg_try_advisory_lock(${lock}::int, ${chainId}::int) as ok`;
  if (row?.ok !== true) {
    conn.release();
    return null;
  }
  return {
    async release() {
      try {
        await conn`select pg_advisory_unlock(${lock}::int, ${chainId}::int)`;
      } finally {
        conn.release();
      }
    },
    async held() {
      // A reserved connection that was lost reconnects to a new backend, which holds nothing.
      const [state] = await conn<{ held: boolean }[]>`
        select exists (
          select 1 from pg_locks
          where locktype = 'advisory' and pid = pg_backend_pid() and granted
            and classid = ${lock}::int::oid and objid = ${chainId}::int::oid and objsubid = 2
        ) as held`;
      return state?.held === true;
    },
  };
}

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

/** Blocks remembered at or above `fromNumber`, newest first (the reorg walk-back reads them). */
export async function recentBlocks(sql: Sql, chainId: number, fromNumber: bigint): Promise<BlockRef[]> {
  const rows = await sql<{ number: string; hash: string }[]>`
    select number::text, hash from chain_blocks
    where chain_id = ${chainId} and number >= ${fromNumber.toString()}::bigint order by number desc`;
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

/** Events above `number`, in chain order (what a reorg to `number` orphans). */
export async function eventsAbove(sql: Sql, chainId: number, number: bigint): Promise<EventRecord[]> {
  const rows = await sql.unsafe<EventRow[]>(
    `select ${EVENT_COLUMNS} from chain_events where chain_id = $1 and block_number > $2::bigint
     order by block_number, log_index`,
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
     order by block_number, log_index`,
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
     order by block_number, log_index`,
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
     order by block_number, log_index`,
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

/**
 * Each user's vault account on the chain: the first wallet linked (by link time, then address), where
 * the settlement worker records debt and refunds. Wallets are never unlinked, so it never changes.
 */
export async function vaultAccountsOf(
  sql: Sql,
  chainId: number,
  userIds: readonly string[],
): Promise<Map<string, Address>> {
  if (userIds.length === 0) return new Map();
  const rows = await sql<{ user_id: string; address: string }[]>`
    select distinct on (user_id) user_id::text, address from wallets
    where chain_id = ${chainId} and user_id = any(${[...userIds]}::uuid[])
    order by user_id, linked_at, address`;
  return new Map(rows.map((r) => [r.user_id, r.address.toLowerCase() as Address]));
}

export async function walletUsers(
  sql: Sql,
  chainId: number,
  addresses: readonly string[],
): Promise<Map<string, string>> {
  if (addresses.length === 0) return new Map();
  const rows = await sql<{ address: string; user_id: string }[]>`
    select address, user_id::text from wallets where chain_id = ${chainId} and address = any(${addresses as string[]}::text[])`;
  return new Map(rows.map((r) => [r.address, r.user_id]));
}

export interface AssetRow {
  assetId: string;
  token: Address;
  tokenDecimals: number;
  feed: Address;
  priceDecimals: number;
  ltvBps: bigint;
  liquidationThresholdBps: bigint;
  priceAgeMaxS: number;
  /** Oracle sanity (docs/chain.md "Oracle sanity"). */
  priceAnswerMin: bigint;
  priceAnswerMax: bigint;
  priceDeviationMaxBps: bigint;
  priceFutureSkewS: number;
}

export async function loadAssets(sql: Sql, chainId: number): Promise<AssetRow[]> {
  const rows = await sql<
    (AssetRiskRow & {
      token_address: string;
      price_feed_address: string;
      price_answer_min: string;
      price_answer_max: string;
      price_deviation_max_bps: number;
      price_future_skew_s: number;
    })[]
  >`select id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps, liquidation_threshold_bps,
      price_age_max_s, price_answer_min::text, price_answer_max::text, price_deviation_max_bps, price_future_skew_s
    from assets where chain_id = ${chainId} and enabled order by id`;
  return rows.map((r) => ({
    ...assetRiskOf(r),
    token: r.token_address.toLowerCase() as Address,
    feed: r.price_feed_address.toLowerCase() as Address,
    priceAnswerMin: BigInt(r.price_answer_min),
    priceAnswerMax: BigInt(r.price_answer_max),
    priceDeviationMaxBps: BigInt(r.price_deviation_max_bps),
    priceFutureSkewS: r.price_future_skew_s,
  }));
}

// ── Positions and credit accounts ──────────────────────────────────────────────────────────────

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

export interface CreditDelta {
  userId: string;
  debtUsdcDelta: bigint;
  unsettledCentsDelta: bigint;
}

/** Adds deltas to credit_accounts and bumps each account's version. */
export async function addCreditDeltas(sql: Sql, deltas: readonly CreditDelta[]): Promise<void> {
  if (deltas.length === 0) return;
  const users = deltas.map((d) => d.userId);
  await sql`
    insert into credit_accounts (user_id) select u from unnest(${users}::uuid[]) as x(u) on conflict do nothing`;
  await sql`
    update credit_accounts c set debt_onchain_usdc = c.debt_onchain_usdc + x.d,
      unsettled_cents = c.unsettled_cents + x.s, version = c.version + 1, updated_at = now()
    from unnest(${users}::uuid[], ${deltas.map((d) => d.debtUsdcDelta.toString())}::text[]::numeric[],
      ${deltas.map((d) => d.unsettledCentsDelta.toString())}::bigint[]) as x(u, d, s)
    where c.user_id = x.u`;
}

export interface ChainStateRow {
  userId: string;
  debtOnchainUsdc: bigint;
  collateral: Map<string, { amountBase: bigint; pendingWithdrawalBase: bigint }>;
}

/** What the Redis write-through needs per user: every position and the on-chain debt. */
export async function chainStateOfUsers(sql: Sql, userIds: readonly string[]): Promise<ChainStateRow[]> {
  if (userIds.length === 0) return [];
  const ids = [...userIds];
  const [positions, accounts] = await Promise.all([
    sql<{ user_id: string; asset_id: string; c: string; w: string }[]>`
      select user_id::text, asset_id, collateral_base::text as c, pending_withdrawal_base::text as w
      from positions where user_id = any(${ids}::uuid[])`,
    sql<{ user_id: string; debt: string }[]>`
      select user_id::text, debt_onchain_usdc::text as debt from credit_accounts where user_id = any(${ids}::uuid[])`,
  ]);
  const byUser = new Map<string, ChainStateRow>(
    ids.map((id) => [id, { userId: id, debtOnchainUsdc: 0n, collateral: new Map() }]),
  );
  for (const p of positions) {
    byUser
      .get(p.user_id)
      ?.collateral.set(p.asset_id, { amountBase: BigInt(p.c), pendingWithdrawalBase: BigInt(p.w) });
  }
  for (const a of accounts) {
    const row = byUser.get(a.user_id);
    if (row !== undefined) row.debtOnchainUsdc = BigInt(a.debt);
  }
  return [...byUser.values()];
}

// ── Prices ─────────────────────────────────────────────────────────────────────────────────────

export interface PriceRow {
  assetId: string;
  roundId: bigint;
  answer: bigint;
  updatedAtS: bigint;
  blockNumber: bigint;
}

/**
 * The price in force per asset: the newest applied round (by time, then round). One index probe per
 * asset (prices_asset_time_idx), however long the price history grows.
 */
export async function pricesInForce(sql: Sql, assetIds: readonly string[]): Promise<Map<string, PriceRow>> {
  if (assetIds.length === 0) return new Map();
  const rows = await sql<
    { asset_id: string; round_id: string; answer: string; s: string; b: string | null }[]
  >`
    select a.asset_id, p.round_id::text, p.answer::text, extract(epoch from p.updated_at)::bigint::text as s,
      p.block_number::text as b
    from unnest(${[...assetIds]}::text[]) as a(asset_id)
    cross join lateral (
      select round_id, answer, updated_at, block_number from prices
      where prices.asset_id = a.asset_id order by updated_at desc, round_id desc limit 1
    ) p`;
  return new Map(
    rows.map((r) => [
      r.asset_id,
      {
        assetId: r.asset_id,
        roundId: BigInt(r.round_id),
        answer: BigInt(r.answer),
        updatedAtS: BigInt(r.s),
        blockNumber: BigInt(r.b ?? '0'),
      },
    ]),
  );
}

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

export interface LedgerEntry {
  account: string;
  userId: string | null;
  amountCents: bigint;
}

export interface LedgerTransfer {
  ref: string;
  kind: 'settlement' | 'refund' | 'repayment' | 'liquidation' | 'adjustment';
  userId: string | null;
  entries: LedgerEntry[];
}

/**
 * Inserts transfers, then all their entries in ONE statement (the balance trigger checks per
 * statement). A transfer whose ref exists is skipped with its entries: refs make this idempotent.
 */
export async function insertLedgerTransfers(sql: Sql, transfers: readonly LedgerTransfer[]): Promise<number> {
  if (transfers.length === 0) return 0;
  const inserted = await sql<{ id: string; ref: string }[]>`
    insert into ledger_transfers (ref, kind, user_id)
    select r, k, u from unnest(${transfers.map((t) => t.ref)}::text[], ${transfers.map((t) => t.kind)}::text[],
      ${transfers.map((t) => t.userId)}::uuid[]) as x(r, k, u)
    on conflict (ref) do nothing
    returning id::text, ref`;
  if (inserted.length === 0) return 0;
  const idByRef = new Map(inserted.map((r) => [r.ref, r.id]));
  const ids: string[] = [];
  const accounts: string[] = [];
  const users: (string | null)[] = [];
  const amounts: string[] = [];
  for (const transfer of transfers) {
    const id = idByRef.get(transfer.ref);
    if (id === undefined) continue;
    for (const entry of transfer.entries) {
      ids.push(id);
      accounts.push(entry.account);
      users.push(entry.userId);
      amounts.push(entry.amountCents.toString());
    }
  }
  await sql`
    insert into ledger_entries (transfer_id, account, user_id, amount_cents)
    select t, a, u, c from unnest(${ids}::bigint[], ${accounts}::text[], ${users}::uuid[], ${amounts}::bigint[])
      as x(t, a, u, c)`;
  return inserted.length;
}

/** Entries of existing transfers, by ref (a reorg reverses exactly what was booked). */
export async function ledgerEntriesByRef(
  sql: Sql,
  refs: readonly string[],
): Promise<Map<string, LedgerEntry[]>> {
  if (refs.length === 0) return new Map();
  const rows = await sql<{ ref: string; account: string; user_id: string | null; amount_cents: string }[]>`
    select t.ref, e.account, e.user_id::text, e.amount_cents::text
    from ledger_transfers t join ledger_entries e on e.transfer_id = t.id
    where t.ref = any(${[...refs]}::text[]) order by e.id`;
  const byRef = new Map<string, LedgerEntry[]>();
  for (const r of rows) {
    const list = byRef.get(r.ref) ?? [];
    list.push({ account: r.account, userId: r.user_id, amountCents: BigInt(r.amount_cents) });
    byRef.set(r.ref, list);
  }
  return byRef;
}

export async function insertAudit(
  sql: Sql,
  entry: { actor: string; action: string; entityType: string; entityId: string; data: unknown },
): Promise<void> {
  await sql`
    insert into audit_log (actor, action, entity_type, entity_id, data)
    values (${entry.actor}, ${entry.action}, ${entry.entityType}, ${entry.entityId}, ${JSON.stringify(entry.data)}::text::jsonb)`;
}
