/**
 * Job `stripe`: Stripe's Issuing transactions for a period against our ledger. Every capture and
 * refund in the export must match a ledger movement of the same transaction and amount, and every
 * capture or refund the ledger booked in the period must be in the export.
 *
 * Our side: ledger transfers of kind capture/refund (ref `lifecycle:<eventId>`), joined to the card
 * event that caused them (card_events.id = eventId; object_id = the transaction `ipi_…`), with the
 * user_unsettled entry as the amount (+ for a capture, − for a refund: the negative of Stripe's sign),
 * plus its user_refunds_held entry (the part of a refund held for review, see shared/lifecycle).
 * The period applies to the transaction's own `created` (from the stored event), not the event's.
 *
 * Authorizations, when given (the API path always reads them): every authorization Stripe approved in
 * the period must be known to us (`stripe_authorization_missing_in_ledger`: a stand-in or timeout
 * approval whose `issuing_authorization.created` never reached us), and one Stripe reversed or expired
 * must hold nothing here (`hold_open_after_stripe_ended`; the `holds` job releases it at expiry, or at
 * once with `--authorizations`). A `closed` authorization may keep its captured part held until the
 * capture is booked (shared/lifecycle), so it is not a finding.
 *
 * Reports only; the period is the unit, so a rerun on the same data gives the same findings.
 *
 * Two ways in: `stripeJob` on data given (the export files of a manual run), and `stripeApiJob`, which
 * reads each day from Stripe's API (stripe-api.ts) — the scheduled nightly run.
 */
import type Stripe from 'stripe';
import { limits } from './limits.ts';
import { fetchIssuingPeriod } from './stripe-api.ts';
import type { StripeAuthorization, StripeTransaction } from './stripe-export.ts';
import type { Finding, JobContext, JobOutcome } from './types.ts';

export interface StripeJobOptions {
  transactions: readonly StripeTransaction[];
  authorizations?: readonly StripeAuthorization[];
  /** Period [fromS, toS) in Unix seconds on the transaction's `created`. */
  fromS: number;
  toS: number;
}

interface LedgerMovement {
  transaction_id: string;
  kind: 'capture' | 'refund';
  unsettled_cents: string;
}

export function stripeJob(options: StripeJobOptions) {
  return async (ctx: JobContext): Promise<JobOutcome> => {
    const { checked, findings } = await reconcilePeriod(ctx.sql, options);
    // A manual run on an export leaves the scheduled run's day cursor (stripeApiJob) where it was.
    return { checked, findings, repairs: 0, cursor: ctx.cursor };
  };
}

async function reconcilePeriod(
  sql: JobContext['sql'],
  options: StripeJobOptions,
): Promise<{ checked: number; findings: Finding[] }> {
  const { fromS, toS } = options;
  const slackS = limits.stripeEventSlackS;
  const movements = await sql<LedgerMovement[]>`
      select ce.object_id as transaction_id, t.kind, coalesce(sum(e.amount_cents) filter (where e.account in ('user_unsettled', 'user_refunds_held')), 0)::text as unsettled_cents
      from ledger_transfers t
      join card_events ce on ce.id = substr(t.ref, length('lifecycle:') + 1)
        and ce.created_at >= ${new Date((fromS - slackS) * 1000)} and ce.created_at < ${new Date((toS + slackS) * 1000)}
      join ledger_entries e on e.transfer_id = t.id
      where t.kind in ('capture', 'refund') and t.ref like 'lifecycle:%'
        and (ce.payload->'data'->'object'->>'created')::bigint >= ${fromS}
        and (ce.payload->'data'->'object'->>'created')::bigint < ${toS}
      group by ce.object_id, t.kind`;
  const ours = new Map<string, bigint>();
  for (const m of movements)
    ours.set(m.transaction_id, (ours.get(m.transaction_id) ?? 0n) + BigInt(m.unsettled_cents));

  const findings: Finding[] = [];
  const theirs = new Map<string, StripeTransaction>();
  for (const t of options.transactions) {
    if (t.createdS < fromS || t.createdS >= toS) continue;
    if (theirs.has(t.id)) {
      findings.push({ kind: 'stripe_duplicate_row', transactionId: t.id });
      continue;
    }
    theirs.set(t.id, t);
  }
  for (const [id, t] of [...theirs].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const expected = -t.amountCents;
    const booked = ours.get(id);
    if (booked === undefined) {
      findings.push({
        kind: `stripe_${t.type}_missing_in_ledger`,
        transactionId: id,
        amountCents: String(expected),
        authorizationId: t.authorizationId,
      });
    } else if (booked !== expected) {
      findings.push({
        kind: 'amount_mismatch',
        transactionId: id,
        stripeCents: String(expected),
        ledgerCents: String(booked),
      });
    }
  }
  for (const m of movements.sort((a, b) => (a.transaction_id < b.transaction_id ? -1 : 1))) {
    if (!theirs.has(m.transaction_id)) {
      findings.push({
        kind: `ledger_${m.kind}_missing_in_stripe`,
        transactionId: m.transaction_id,
        amountCents: m.unsettled_cents,
      });
    }
  }
  const authorizations = await authorizationFindings(sql, options.authorizations ?? [], fromS, toS);
  findings.push(...authorizations.findings);
  return { checked: theirs.size + movements.length + authorizations.checked, findings };
}

async function authorizationFindings(
  sql: JobContext['sql'],
  authorizations: readonly StripeAuthorization[],
  fromS: number,
  toS: number,
): Promise<{ checked: number; findings: Finding[] }> {
  const theirs = new Map<string, StripeAuthorization>();
  for (const a of authorizations) if (a.createdS >= fromS && a.createdS < toS) theirs.set(a.id, a);
  if (theirs.size === 0) return { checked: 0, findings: [] };
  const ours = new Map(
    (
      await sql<{ id: string; held_cents: string }[]>`
        select id, held_cents::text from authorizations where id = any(${[...theirs.keys()]})`
    ).map((row) => [row.id, BigInt(row.held_cents)]),
  );
  const findings: Finding[] = [];
  for (const [id, a] of [...theirs].sort(([x], [y]) => (x < y ? -1 : 1))) {
    const held = ours.get(id);
    if (held === undefined) {
      if (a.approved)
        findings.push({
          kind: 'stripe_authorization_missing_in_ledger',
          authorizationId: id,
          amountCents: String(a.amountCents),
        });
    } else if ((a.status === 'reversed' || a.status === 'expired') && held > 0n) {
      findings.push({
        kind: 'hold_open_after_stripe_ended',
        authorizationId: id,
        stripeStatus: a.status,
        heldCents: String(held),
      });
    }
  }
  return { checked: theirs.size, findings };
}

const DAY_S = 86_400;
const dayText = (dayS: number) => new Date(dayS * 1000).toISOString().slice(0, 10);
const dayOf = (text: string) => {
  const ms = Date.parse(`${text}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text) || Number.isNaN(ms))
    throw new Error(`bad stripe cursor ${JSON.stringify(text)}`);
  return ms / 1000;
};

export interface StripeApiJobOptions {
  stripe: Stripe;
  /** A manual run's period; the scheduled run leaves it out and walks whole UTC days. */
  period?: { fromS: number; toS: number };
  daysPerRunMax?: number;
  pageSize?: number;
}

/**
 * The scheduled `stripe` run: reconciles every whole UTC day from the first one not yet reconciled
 * (the run's cursor, `YYYY-MM-DD`; yesterday on the first run) up to yesterday, at most
 * `stripeDaysPerRunMax` days, each read whole from Stripe's API. Findings name their `day`.
 *
 * Nothing is lost on a bad answer: the run throws (recorded failed, QStash retries) without moving the
 * cursor, so the next run starts again at the same day — reads and findings are idempotent. A day that
 * reconciled with findings is done (its findings are in that run's record and the alert).
 * A manual run with an explicit period leaves the cursor where it was.
 */
export function stripeApiJob(options: StripeApiJobOptions) {
  const daysMax = options.daysPerRunMax ?? limits.stripeDaysPerRunMax;
  return async (ctx: JobContext): Promise<JobOutcome> => {
    const read = async (fromS: number, toS: number) =>
      fetchIssuingPeriod(options.stripe, {
        fromS,
        toS,
        ...(options.pageSize === undefined ? {} : { pageSize: options.pageSize }),
      });
    if (options.period !== undefined) {
      const { fromS, toS } = options.period;
      const data = await read(fromS, toS);
      const { checked, findings } = await reconcilePeriod(ctx.sql, { ...data, fromS, toS });
      return { checked, findings, repairs: 0, cursor: ctx.cursor };
    }
    const todayS = Math.floor(ctx.now() / 1000 / DAY_S) * DAY_S;
    let dayS = ctx.cursor === null ? todayS - DAY_S : dayOf(ctx.cursor);
    let checked = 0;
    const findings: Finding[] = [];
    for (let days = 0; days < daysMax && dayS < todayS; days++, dayS += DAY_S) {
      const data = await read(dayS, dayS + DAY_S);
      const result = await reconcilePeriod(ctx.sql, { ...data, fromS: dayS, toS: dayS + DAY_S });
      checked += result.checked;
      for (const finding of result.findings) findings.push({ ...finding, day: dayText(dayS) });
    }
    return { checked, findings, repairs: 0, cursor: dayText(dayS) };
  };
}
