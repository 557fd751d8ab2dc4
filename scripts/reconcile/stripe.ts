/**
 * Job `stripe`: Stripe's Issuing transactions for a period against our ledger. Every capture and
 * refund in the export must match a ledger movement of the same transaction and amount, and every
 * capture or refund the ledger booked in the period must be in the export.
 *
 * Our side: ledger transfers of kind capture/refund (ref `lifecycle:<eventId>`), joined to the card
 * event that caused them (card_events.id = eventId; object_id = the transaction `ipi_…`), with the
 * user_unsettled entry as the amount (+ for a capture, − for a refund: the negative of Stripe's sign),
 * plus its user_refunds_held entry (the part of a refund held for review, see hot-path/lifecycle).
 * The period applies to the transaction's own `created` (from the stored event), not the event's.
 *
 * Reports only; the period is the unit (no cursor), so a rerun on the same export gives the same findings.
 */
import { limits } from './limits.ts';
import type { StripeTransaction } from './stripe-export.ts';
import type { Finding, JobContext, JobOutcome } from './types.ts';

export interface StripeJobOptions {
  transactions: readonly StripeTransaction[];
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
    const { sql } = ctx;
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
    return { checked: theirs.size + movements.length, findings, repairs: 0, cursor: null };
  };
}
