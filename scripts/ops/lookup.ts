/**
 * Operator lookups: find a user by email, card, wallet, authorization or user id, and show what an
 * on-call engineer needs about them — controls, position, holds, recent decisions, settlement and
 * liquidation state — from the financial database (the system of record) and the hot path's Redis.
 *
 *   find-user <email|cardId|wallet|authorizationId|userId>
 *   show-user <email|cardId|wallet|authorizationId|userId> [--decisions N]
 *
 * Emails live in Supabase only (`public.profiles`, copied from `auth.users` by the sign-up trigger):
 * the financial database keeps no personal data, so an email lookup asks the Supabase database for
 * the user id (which is the financial user id), and every other lookup asks it for the email and name
 * to print — when Supabase does not answer, those are printed as unknown and the lookup still works.
 *
 * Money is printed with formatCents from bigint cents, USDC and token amounts as exact decimals.
 */
import type { Sql } from '../../shared/db/client.ts';
import type { MerchantNames } from '../../shared/hsm/merchant-names.ts';
import { formatCents, USDC_DECIMALS } from '../../shared/money.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { ACCOUNT, userKeys } from '../../shared/redis/keys.ts';
import { readTruth } from '../../supabase/sync/projection-read.ts';
import { BadInput, expectPositionals, guarded, intOption, parseStrict, printableIo } from './args.ts';
import type { OpsCommand, OpsIo } from './command.ts';

export interface LookupDeps {
  /** The financial database. */
  sql: Sql;
  redis: Redis;
  /** REDIS_KEY_PREFIX. */
  prefix: string;
  /** The Supabase database (SUPABASE_DB_URL), opened on first use. */
  supabase(): Promise<Sql>;
  /** HEALTH_FACTOR_WARNING_BPS. */
  healthWarningBps: number;
  /**
   * Opens the sealed merchant names (the token the config names); null without one: a sealed name is
   * then shown as `(sealed)`.
   */
  merchantNames?: MerchantNames | null;
}

export interface LookupContext {
  deps(): Promise<LookupDeps>;
}

export type LookupKind = 'email' | 'card' | 'wallet' | 'authorization' | 'user';

export const LOOKUP_LIMITS = {
  keyCharsMax: 320,
  decisionsShownDefault: 10,
  decisionsShownMax: 100,
  holdsShownMax: 50,
  settlementsShownMax: 5,
  liquidationsShownMax: 5,
  usersFoundMax: 20,
} as const;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Which kind of key the operator typed, by its shape; bad input when it is none of them. */
export function lookupKind(key: string): LookupKind {
  if (key.length === 0 || key.length > LOOKUP_LIMITS.keyCharsMax)
    throw new BadInput(`a lookup key is 1..${LOOKUP_LIMITS.keyCharsMax} characters`);
  if (/^[^\s@]+@[^\s@]+$/.test(key)) return 'email';
  if (/^ic_[A-Za-z0-9]{1,64}$/.test(key)) return 'card';
  if (/^0x[0-9a-fA-F]{40}$/.test(key)) return 'wallet';
  if (/^iauth_[A-Za-z0-9]{1,64}$/.test(key)) return 'authorization';
  if (UUID.test(key)) return 'user';
  throw new BadInput(
    `${JSON.stringify(key.slice(0, 60))} is not an email, card id (ic_…), wallet (0x + 40 hex), authorization id (iauth_…) or user id (uuid)`,
  );
}

/** The financial user ids a key points at (an email can match more than one profile only by case). */
export async function findUserIds(
  deps: LookupDeps,
  key: string,
): Promise<{ kind: LookupKind; userIds: string[] }> {
  const kind = lookupKind(key);
  const { sql } = deps;
  let rows: { user_id: string | null }[];
  switch (kind) {
    case 'email': {
      const supabase = await deps.supabase();
      rows = await supabase<{ user_id: string }[]>`
        select id::text as user_id from public.profiles where lower(email) = lower(${key})
        order by id limit ${LOOKUP_LIMITS.usersFoundMax}`;
      // Only users the financial database knows are users of the card program. (Ids travel as one
      // comma-joined text: a fresh connection has not loaded the array types that sql.array needs.)
      if (rows.length > 0) {
        rows = await sql<{ user_id: string }[]>`
          select id::text as user_id from users
          where id = any(string_to_array(${rows.map((r) => r.user_id as string).join(',')}, ',')::uuid[])
          order by id`;
      }
      break;
    }
    case 'card':
      rows = await sql`select user_id::text from cards where id = ${key}`;
      break;
    case 'wallet':
      rows =
        await sql`select distinct user_id::text from wallets where address = ${key.toLowerCase()} order by 1`;
      break;
    case 'authorization':
      // The authorization row, else its decisions (written together), else its card's owner.
      rows = await sql`
        select coalesce(a.user_id, c.user_id)::text as user_id from authorizations a
          left join cards c on c.id = a.card_id where a.id = ${key}
        union
        select coalesce(d.user_id, c.user_id)::text from decisions d
          left join cards c on c.id = d.card_id where d.authorization_id = ${key}`;
      break;
    case 'user':
      rows = await sql`select id::text as user_id from users where id = ${key.toLowerCase()}`;
      break;
  }
  const userIds = [...new Set(rows.flatMap((r) => (r.user_id === null ? [] : [r.user_id])))];
  return { kind, userIds };
}

interface Profile {
  email: string | null;
  displayName: string | null;
}

/** Emails and names from Supabase; null when Supabase cannot be asked (the lookup goes on). */
async function profiles(
  deps: LookupDeps,
  userIds: readonly string[],
): Promise<Map<string, Profile> | string> {
  try {
    const supabase = await deps.supabase();
    const rows = await supabase<{ id: string; email: string | null; display_name: string | null }[]>`
      select id::text, email, display_name from public.profiles where id = any(string_to_array(${userIds.join(',')}, ',')::uuid[])`;
    return new Map(rows.map((r) => [r.id, { email: r.email, displayName: r.display_name }]));
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    return `unknown (Supabase did not answer${typeof code === 'string' ? `: ${code}` : ''})`;
  }
}

function identity(profilesOrError: Map<string, Profile> | string, userId: string): string {
  if (typeof profilesOrError === 'string') return `email ${profilesOrError}`;
  const p = profilesOrError.get(userId);
  if (p === undefined) return 'email - (no Supabase profile)';
  return `email ${p.email ?? '-'}  name ${p.displayName === null ? '-' : JSON.stringify(p.displayName)}`;
}

interface CardRow {
  id: string;
  status: string;
  frozen: boolean;
  ops_frozen: boolean;
  ops_frozen_by: string | null;
  ops_frozen_reason: string | null;
  ops_frozen_at: Date | null;
  last4: string | null;
}

function cardLine(c: CardRow): string {
  const freezes = [
    c.frozen ? 'frozen by the user' : null,
    c.ops_frozen
      ? `frozen by ops (${c.ops_frozen_by ?? '?'} at ${c.ops_frozen_at?.toISOString() ?? '?'}: ${JSON.stringify(c.ops_frozen_reason ?? '')})`
      : null,
  ].filter((x) => x !== null);
  return `${c.id}${c.last4 === null ? '' : ` ••${c.last4}`} ${c.status}${freezes.length === 0 ? '' : `, ${freezes.join(', ')}`}`;
}

async function cardsOf(sql: Sql, userId: string): Promise<CardRow[]> {
  return sql<CardRow[]>`
    select id, status, frozen, ops_frozen, ops_frozen_by, ops_frozen_reason, ops_frozen_at, last4
    from cards where user_id = ${userId} order by created_at desc, id desc`;
}

async function walletsOf(sql: Sql, userId: string): Promise<string[]> {
  const rows = await sql<{ chain_id: number; address: string }[]>`
    select chain_id, address from wallets where user_id = ${userId} order by linked_at, address`;
  return rows.map((w) => `${w.address} (chain ${w.chain_id})`);
}

/** Exact decimal of token base units, trailing zeros dropped: formatUnits(1500n, 3) = '1.5'. */
export function formatUnits(amountBase: bigint, decimals: number): string {
  const negative = amountBase < 0n;
  const abs = negative ? -amountBase : amountBase;
  const scale = 10n ** BigInt(decimals);
  const fraction = decimals === 0 ? '' : (abs % scale).toString().padStart(decimals, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${abs / scale}${fraction === '' ? '' : `.${fraction}`}`;
}

/** Exact decimal of USDC base units (6 decimals), e.g. `12.500001 USDC`. */
export function formatUsdc(amountUsdc: bigint): string {
  return `${formatUnits(amountUsdc, USDC_DECIMALS)} USDC`;
}

/** The health factor (18-decimal string) cut to 4 decimals, never rounded up. */
function shortHealth(decimal: string | null): string {
  if (decimal === null) return 'none (no debt)';
  const [whole, fraction = ''] = decimal.split('.');
  return `${whole}.${fraction.slice(0, 4).padEnd(4, '0')}`;
}

async function resolveOne(deps: LookupDeps, key: string): Promise<string> {
  const { kind, userIds } = await findUserIds(deps, key);
  if (userIds.length === 0) throw new BadInput(`no user with ${kind} ${key}`);
  if (userIds.length > 1)
    throw new BadInput(
      `${userIds.length} users match ${kind} ${key} (${userIds.join(', ')}): give a user id`,
    );
  return userIds[0] as string;
}

/** The position as the dashboard projection computes it, from {@link readTruth}; undefined without an account. */
type PositionSummary = Awaited<ReturnType<typeof readTruth>>['summaries'][number] | undefined;

/** The user's status, identity, controls, cards and wallets; BadInput when there is no such user. */
async function showControls(deps: LookupDeps, io: OpsIo, userId: string): Promise<void> {
  const { sql } = deps;
  const [user] = await sql<
    {
      status: string;
      credit_limit_cents: string;
      daily_limit_cents: string;
      daily_limit_ceiling_cents: string | null;
      daily_limit_pending_cents: string | null;
      daily_limit_pending_at: Date | null;
      blocked_mccs: string[];
      created_at: Date;
    }[]
  >`select status, credit_limit_cents::text, daily_limit_cents::text, daily_limit_ceiling_cents::text,
      daily_limit_pending_cents::text, daily_limit_pending_at, blocked_mccs, created_at
    from users where id = ${userId}`;
  if (user === undefined) throw new BadInput(`no user ${userId}`);
  const who = await profiles(deps, [userId]);
  io.out(
    `user ${userId}  status ${user.status}  ${identity(who, userId)}  since ${user.created_at.toISOString()}`,
  );
  const ceiling =
    user.daily_limit_ceiling_cents === null ? 'none' : formatCents(BigInt(user.daily_limit_ceiling_cents));
  const pending =
    user.daily_limit_pending_cents === null
      ? ''
      : `, increase to ${formatCents(BigInt(user.daily_limit_pending_cents))} due ${user.daily_limit_pending_at?.toISOString()}`;
  io.out(
    `controls: credit limit ${formatCents(BigInt(user.credit_limit_cents))}; daily limit ${formatCents(BigInt(user.daily_limit_cents))} (ceiling ${ceiling}${pending}); blocked categories ${user.blocked_mccs.length === 0 ? 'none' : user.blocked_mccs.join(',')}`,
  );
  const cards = await cardsOf(sql, userId);
  io.out(`cards: ${cards.length === 0 ? 'none' : cards.map(cardLine).join('; ')}`);
  const wallets = await walletsOf(sql, userId);
  io.out(`wallets: ${wallets.length === 0 ? 'none linked' : wallets.join('; ')}`);
}

/** Collateral per asset and the computed position (value, borrow power, debt, available, health). */
async function showPosition(deps: LookupDeps, io: OpsIo, userId: string): Promise<PositionSummary> {
  const { sql } = deps;
  // The position, computed exactly as the dashboard projection and the hot path compute it.
  const truth = await readTruth(sql, [userId], {
    activityPerUserMax: 0,
    healthWarningBps: deps.healthWarningBps,
  });
  const s = truth.summaries[0];
  const holdings = await sql<
    { asset_id: string; collateral_base: string; pending_withdrawal_base: string; token_decimals: number }[]
  >`select p.asset_id, p.collateral_base::text, p.pending_withdrawal_base::text, a.token_decimals
    from positions p join assets a on a.id = p.asset_id where p.user_id = ${userId} order by p.asset_id`;
  const [account] = await sql<{ debt_onchain_usdc: string }[]>`
    select debt_onchain_usdc::text from credit_accounts where user_id = ${userId}`;
  io.out(`position (as of ${truth.asOf.toISOString()}):`);
  for (const h of holdings) {
    const pendingW = BigInt(h.pending_withdrawal_base);
    io.out(
      `  collateral ${h.asset_id} ${formatUnits(BigInt(h.collateral_base), h.token_decimals)}${pendingW === 0n ? '' : ` (withdrawal pending ${formatUnits(pendingW, h.token_decimals)})`}${s?.stale_asset_ids.includes(h.asset_id) ? ' [price stale: counts as zero]' : ''}`,
    );
  }
  if (holdings.length === 0) io.out('  collateral none');
  if (s !== undefined) {
    const c = (v: string) => formatCents(BigInt(v));
    io.out(
      `  collateral value ${c(s.collateral_value_cents)}  borrow power ${c(s.borrow_power_cents)}  credit limit ${c(s.credit_limit_cents)}`,
    );
    io.out(
      `  debt on-chain ${c(s.debt_onchain_cents)} (${formatUsdc(BigInt(account?.debt_onchain_usdc ?? '0'))})  unsettled ${c(s.unsettled_cents)}  holds ${c(s.holds_cents)}`,
    );
    io.out(`  available ${c(s.available_cents)}`);
    io.out(
      `  health factor ${shortHealth(s.health_factor)}${s.health_notice === null ? '' : ` (${s.health_notice})`}`,
    );
  }

  return s;
}

/** Open holds in Postgres and in the hot path's Redis. */
async function showHolds(deps: LookupDeps, io: OpsIo, userId: string, s: PositionSummary): Promise<void> {
  const { sql, redis, prefix } = deps;
  // Holds: Postgres (what the ledger writer has written) and the hot path's Redis (what decides now).
  const holds = await sql<
    {
      id: string;
      held_cents: string;
      status: string;
      expires_at: Date | null;
      merchant_name_sealed: Buffer | null;
      merchant_category_code: string | null;
      created_at: Date;
    }[]
  >`select id, held_cents::text, status, expires_at, merchant_name_sealed, merchant_category_code, created_at
    from authorizations where user_id = ${userId} and held_cents > 0
    order by created_at, id limit ${LOOKUP_LIMITS.holdsShownMax + 1}`;
  const keys = userKeys(prefix, userId);
  const [redisHolds, redisCount] = await Promise.all([
    redis.hget(keys.account, ACCOUNT.holdsCents),
    redis.hlen(keys.holds),
  ]);
  io.out(
    `holds: ${s === undefined ? '?' : formatCents(BigInt(s.holds_cents))} in Postgres; ${redisHolds === null ? 'account not cached in Redis' : `${formatCents(BigInt(redisHolds))} in Redis (${redisCount} open)`}`,
  );
  for (const h of holds.slice(0, LOOKUP_LIMITS.holdsShownMax)) {
    // Sealed at rest (docs/operations.md "Encryption at rest"): opened through the token, or not shown.
    const merchant =
      h.merchant_name_sealed === null
        ? '-'
        : ((await deps.merchantNames?.open(h.id, h.merchant_name_sealed)) ?? '(sealed)');
    io.out(
      `  ${h.id} ${formatCents(BigInt(h.held_cents))} ${h.status} since ${h.created_at.toISOString()} expires ${h.expires_at?.toISOString() ?? '-'} ${merchant} (${h.merchant_category_code ?? '-'})`,
    );
  }
  if (holds.length > LOOKUP_LIMITS.holdsShownMax) io.out(`  … more than ${LOOKUP_LIMITS.holdsShownMax}`);
}

/** The newest `decisionsShown` authorization decisions. */
async function showDecisions(
  deps: LookupDeps,
  io: OpsIo,
  userId: string,
  decisionsShown: number,
): Promise<void> {
  const { sql } = deps;
  const decisions = await sql<
    {
      decided_at: Date;
      authorization_id: string;
      card_id: string;
      approved: boolean;
      requested_cents: string;
      approved_cents: string;
      reason: string;
      source: string;
    }[]
  >`select decided_at, authorization_id, card_id, approved, requested_cents::text, approved_cents::text, reason, source
    from decisions where user_id = ${userId} order by decided_at desc, id desc limit ${decisionsShown}`;
  io.out(`recent decisions (${decisions.length}, newest first):`);
  for (const d of decisions) {
    const requested = BigInt(d.requested_cents);
    const approved = BigInt(d.approved_cents);
    const outcome = !d.approved ? 'declined' : approved < requested ? 'partial' : 'approved';
    io.out(
      `  ${d.decided_at.toISOString()} ${d.authorization_id} ${outcome} ${formatCents(approved)} of ${formatCents(requested)} ${d.reason} (${d.source}, card ${d.card_id})`,
    );
  }
}

/** Settlement and chain-refund states, and the settlements not yet confirmed. */
async function showSettlement(deps: LookupDeps, io: OpsIo, userId: string): Promise<void> {
  const { sql } = deps;
  const settlementStates = await sql<{ kind: string; status: string; n: number; cents: string }[]>`
    select 'spend' as kind, status, count(*)::int as n, sum(amount_cents)::text as cents
      from settlements where user_id = ${userId} group by status
    union all
    select 'refund', status, count(*)::int, sum(amount_cents)::text
      from chain_refunds where user_id = ${userId} group by status
    order by 1, 2`;
  io.out(
    `settlement: ${settlementStates.length === 0 ? 'nothing captured yet' : settlementStates.map((r) => `${r.kind} ${r.status} ${r.n} (${formatCents(BigInt(r.cents))})`).join('; ')}`,
  );
  const open = await sql<
    {
      ref: string;
      status: string;
      amount_cents: string;
      attempts: number;
      last_error: string | null;
      transaction_hash: string | null;
    }[]
  >`select ref, status, amount_cents::text, attempts, last_error, transaction_hash from settlements
    where user_id = ${userId} and status <> 'confirmed' order by created_at desc limit ${LOOKUP_LIMITS.settlementsShownMax}`;
  for (const o of open) {
    io.out(
      `  ${o.ref} ${o.status} ${formatCents(BigInt(o.amount_cents))} attempts ${o.attempts}${o.transaction_hash === null ? '' : ` tx ${o.transaction_hash}`}${o.last_error === null ? '' : ` last error: ${o.last_error.replace(/\s+/g, ' ').slice(0, 160)}`}`,
    );
  }
}

/** Whether the position is at risk, and the recent liquidations. */
async function showLiquidations(
  deps: LookupDeps,
  io: OpsIo,
  userId: string,
  s: PositionSummary,
): Promise<void> {
  const { sql } = deps;
  const liquidations = await sql<
    {
      status: string;
      asset_id: string;
      collateral_seized_base: string;
      debt_covered_usdc: string;
      transaction_hash: string;
      created_at: Date;
      token_decimals: number | null;
    }[]
  >`select l.status, l.asset_id, l.collateral_seized_base::text, l.debt_covered_usdc::text, l.transaction_hash,
      l.created_at, a.token_decimals
    from liquidations l left join assets a on a.id = l.asset_id
    where l.user_id = ${userId} order by l.created_at desc, l.id desc limit ${LOOKUP_LIMITS.liquidationsShownMax}`;
  const notice = s?.health_notice ?? null;
  io.out(
    `liquidation: ${notice === 'liquidation' ? 'health factor below 1, position liquidatable' : notice === 'warning' ? 'below the warning line' : 'not at risk'}; ${liquidations.length === 0 ? 'none sent' : `${liquidations.length} recent`}`,
  );
  for (const l of liquidations) {
    io.out(
      `  ${l.created_at.toISOString()} ${l.status} seized ${l.token_decimals === null ? l.collateral_seized_base : formatUnits(BigInt(l.collateral_seized_base), l.token_decimals)} ${l.asset_id} covering ${formatUsdc(BigInt(l.debt_covered_usdc))} tx ${l.transaction_hash}`,
    );
  }
}

export async function showUser(
  deps: LookupDeps,
  io: OpsIo,
  userId: string,
  decisionsShown: number,
): Promise<void> {
  await showControls(deps, io, userId);
  const s = await showPosition(deps, io, userId);
  await showHolds(deps, io, userId, s);
  await showDecisions(deps, io, userId, decisionsShown);
  await showSettlement(deps, io, userId);
  await showLiquidations(deps, io, userId, s);
}

export function lookupCommands(context: LookupContext): OpsCommand[] {
  const findUsage = 'npm run ops -- find-user <email|cardId|wallet|authorizationId|userId>';
  const find: OpsCommand = {
    name: 'find-user',
    summary: 'Find a user by email, card id, wallet address, authorization id or user id',
    usage: findUsage,
    mutating: false,
    run: (args, rawIo) => {
      // Names, emails and merchant names come from outside: no control characters reach the terminal.
      const io = printableIo(rawIo);
      return guarded(io, 'find-user', findUsage, async () => {
        const { positionals } = parseStrict(args, {});
        expectPositionals(positionals, ['key']);
        const key = (positionals[0] as string).trim();
        lookupKind(key); // bad input before any connection is opened
        const deps = await context.deps();
        const { kind, userIds } = await findUserIds(deps, key);
        if (userIds.length === 0) throw new BadInput(`no user with ${kind} ${key}`);
        const who = await profiles(deps, userIds);
        io.out(`${userIds.length} user(s) with ${kind} ${key}`);
        for (const userId of userIds) {
          const [user] = await deps.sql<{ status: string }[]>`select status from users where id = ${userId}`;
          const cards = await cardsOf(deps.sql, userId);
          io.out(
            `user ${userId}  status ${user?.status ?? '?'}  ${identity(who, userId)}  cards ${cards.length === 0 ? 'none' : cards.map((c) => `${c.id} (${c.status}${c.frozen || c.ops_frozen ? ', frozen' : ''})`).join(', ')}`,
          );
        }
        return 0;
      });
    },
  };

  const showUsage = 'npm run ops -- show-user <email|cardId|wallet|authorizationId|userId> [--decisions N]';
  const show: OpsCommand = {
    name: 'show-user',
    summary:
      "Show a user's controls, position (collateral, debt, limit, available, health), holds, decisions, settlement and liquidation state",
    usage: showUsage,
    mutating: false,
    run: (args, rawIo) => {
      const io = printableIo(rawIo);
      return guarded(io, 'show-user', showUsage, async () => {
        const { values, positionals } = parseStrict(args, { decisions: { type: 'string' } });
        expectPositionals(positionals, ['key']);
        const shown = intOption(
          values,
          'decisions',
          LOOKUP_LIMITS.decisionsShownDefault,
          0,
          LOOKUP_LIMITS.decisionsShownMax,
        );
        const key = (positionals[0] as string).trim();
        lookupKind(key);
        const deps = await context.deps();
        await showUser(deps, io, await resolveOne(deps, key), shown);
        return 0;
      });
    },
  };
  return [find, show];
}
