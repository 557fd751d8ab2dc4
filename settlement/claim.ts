/**
 * The settlement worker's claims: a `pending` settlement for every capture transfer that has none, and a
 * `pending` chain refund for every credited refund transfer that has none. Each scan resumes after the
 * last transfer id known to be claimed-or-settled and older than a minute (see `claim`).
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { USDC_PER_CENT } from '../shared/money.ts';
import { SETTLEMENT_LIMITS } from './limits.ts';

/** The claim scans of one worker, each with its own resume point. */
export function createClaims({ sql, logger }: { sql: postgres.Sql; logger: Logger }) {
  let lastTransferId = 0n;
  let lastRefundTransferId = 0n;

  /**
   * Creates a `pending` settlement for every capture that has none. The scan starts after the last
   * transfer id known to be settled-or-claimed and older than a minute: ids are drawn at insert but
   * become visible at commit, so a younger, smaller id may still appear and is always re-scanned.
   */
  const claim = async (): Promise<number> => {
    const captures = await sql<
      { id: string; settled_ok: boolean; user_id: string; cents: string; capture_id: string | null }[]
    >`
      select c.id::text, c.created_at < now() - interval '60 seconds' as settled_ok, c.user_id::text,
        c.cents::text,
        case
          when c.ref like 'capture:%' then substr(c.ref, 9)
          when c.ref like 'lifecycle:%' then
            (select ce.object_id from card_events ce
             where ce.id = substr(c.ref, 11) and ce.object_id like 'ipi\_%' limit 1)
          else c.ref
        end as capture_id
      from (
        select t.id, t.ref, t.user_id, t.created_at, sum(e.amount_cents) as cents
        from ledger_transfers t
        join ledger_entries e on e.transfer_id = t.id and e.account = 'user_unsettled' and e.user_id = t.user_id
        where t.kind = 'capture' and t.user_id is not null and t.id > ${lastTransferId.toString()}::bigint
        group by t.id
        order by t.id
        limit ${SETTLEMENT_LIMITS.settlementCapturesPerScanMax}
      ) c`;
    // A capture booked from a Stripe event is named by its transaction id (`ipi_…`), read from the raw
    // event the ledger writer archives in a transaction of its own, after the money. Until that row is
    // there the capture is not claimed (claimed under another name, it would be recorded twice).
    const fresh = captures.filter(
      (c): c is typeof c & { capture_id: string } => c.capture_id !== null && BigInt(c.cents) > 0n,
    );
    let claimed = 0;
    if (fresh.length > 0) {
      const inserted = await sql`
        insert into settlements (ref, user_id, amount_cents, amount_usdc, status)
        select r, u, c, c * ${USDC_PER_CENT.toString()}::bigint, 'pending'
        from unnest(${fresh.map((c) => c.capture_id)}::text[], ${fresh.map((c) => c.user_id)}::uuid[],
          ${fresh.map((c) => c.cents)}::bigint[]) as x(r, u, c)
        on conflict (ref) do nothing`;
      claimed = inserted.count;
    }
    for (const c of captures) {
      if (!c.settled_ok) break;
      if (c.capture_id === null) {
        // Its event is still not archived after a minute (dead-lettered as `archive`): the scan stays
        // here, so it is claimed once the dead letter is replayed.
        logger.warn({ transferId: c.id }, 'settlement: a capture waits for its archived event');
        break;
      }
      lastTransferId = BigInt(c.id);
    }
    return claimed;
  };

  /** Creates a `pending` chain refund for every credited refund transfer that has none (as `claim`). */
  const claimRefunds = async (): Promise<number> => {
    const refunds = await sql<
      {
        id: string;
        settled_ok: boolean;
        user_id: string;
        cents: string;
        transfer_ref: string;
        chain_ref: string;
      }[]
    >`
      select r.id::text, r.created_at < now() - interval '60 seconds' as settled_ok, r.user_id::text,
        (-r.cents)::text as cents, r.ref as transfer_ref,
        'refund:' || case
          when r.ref like 'lifecycle:%' then coalesce(
            (select ce.object_id from card_events ce
             where ce.id = substr(r.ref, 11) and ce.object_id like 'ipi\_%' limit 1),
            r.ref)
          else r.ref
        end as chain_ref
      from (
        select t.id, t.ref, t.user_id, t.created_at, sum(e.amount_cents) as cents
        from ledger_transfers t
        join ledger_entries e on e.transfer_id = t.id and e.account = 'user_unsettled' and e.user_id = t.user_id
        where t.kind = 'refund' and t.user_id is not null and t.id > ${lastRefundTransferId.toString()}::bigint
        group by t.id
        order by t.id
        limit ${SETTLEMENT_LIMITS.settlementCapturesPerScanMax}
      ) r`;
    const fresh = refunds.filter((r) => BigInt(r.cents) > 0n);
    let claimed = 0;
    if (fresh.length > 0) {
      const inserted = await sql`
        insert into chain_refunds (ref, transfer_ref, user_id, amount_cents, amount_usdc, status)
        select r, t, u, c, c * ${USDC_PER_CENT.toString()}::bigint, 'pending'
        from unnest(${fresh.map((r) => r.chain_ref)}::text[], ${fresh.map((r) => r.transfer_ref)}::text[],
          ${fresh.map((r) => r.user_id)}::uuid[], ${fresh.map((r) => r.cents)}::bigint[]) as x(r, t, u, c)
        on conflict do nothing`;
      claimed = inserted.count;
    }
    for (const r of refunds) {
      if (!r.settled_ok) break;
      lastRefundTransferId = BigInt(r.id);
    }
    return claimed;
  };

  return { claim, claimRefunds };
}
