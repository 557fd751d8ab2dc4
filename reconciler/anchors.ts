/**
 * Job `anchors`: the audit log checked against what its own database cannot rewrite
 * (shared/chain/anchor-verify.ts says why both parts are needed).
 *
 * 1. At the start of each pass: every confirmed on-chain anchor (sequence, head) against the stored
 *    hash of that row — `audit_anchor_mismatch`, `audit_anchor_row_missing` — and rows waiting longer
 *    than `staleAfterS` for an anchor: `audit_anchor_stale`. No anchor yet is not a finding by itself.
 * 2. The chain walked in id order with every hash recomputed in TypeScript (not with the database's
 *    `audit_log_row_hash`, which a superuser can replace): `audit_chain_broken`, `audit_row_tampered`,
 *    and at the end `audit_head_mismatch` (rows missing at the end).
 *
 * Reports only; docs/operations.md ("Audit anchors") is the runbook for each finding. The cursor is
 * JSON `{ after, prevHash }` and resumes the walk; a new pass checks the anchors again.
 */
import type { Address, PublicClient } from 'viem';
import { z } from 'zod';
import {
  auditRowHash,
  checkAnchors,
  readAuditRows,
  readConfirmedAnchors,
} from '../shared/chain/anchor-verify.ts';
import { limits } from './limits.ts';
import type { Finding, JobContext, JobOutcome } from './types.ts';

export interface AnchorsJobOptions {
  client: PublicClient;
  contract: Address;
  /** Blocks on top of an anchor before it counts (CHAIN_CONFIRMATIONS). */
  confirmations: number;
  /** Seconds an audit row may wait for its anchor before it is a finding. */
  staleAfterS: number;
  rowsPerBatch?: number;
  rowsPerRunMax?: number;
  runTimeMaxMs?: number;
}

const cursorSchema = z.object({ after: z.string().regex(/^\d{1,19}$/), prevHash: z.string().max(128) });
type AnchorsCursor = z.infer<typeof cursorSchema>;

function parseCursor(text: string | null): AnchorsCursor | null {
  if (text === null) return null;
  try {
    const parsed = cursorSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    // JSON.parse of a string throws only SyntaxError: no usable cursor, start over.
    return null;
  }
}

export function anchorsJob(options: AnchorsJobOptions) {
  const perBatch = options.rowsPerBatch ?? limits.auditRowsPerBatch;
  const rowsMax = options.rowsPerRunMax ?? limits.booksRowsPerRunMax;
  const timeMaxMs = options.runTimeMaxMs ?? limits.runTimeMaxMs;

  return async (ctx: JobContext): Promise<JobOutcome> => {
    const { sql, now } = ctx;
    const startedMs = now();
    const findings: Finding[] = [];
    let checked = 0;
    let cursor = parseCursor(ctx.cursor);
    if (cursor === null) {
      const { anchors } = await readConfirmedAnchors(options.client, options.contract, options.confirmations);
      findings.push(
        ...(await checkAnchors(sql, anchors, {
          nowS: Math.floor(now() / 1000),
          staleAfterS: options.staleAfterS,
        })),
      );
      checked += anchors.length;
      cursor = { after: '0', prevHash: '' };
    }
    while (checked < rowsMax && now() - startedMs < timeMaxMs) {
      const rows = await readAuditRows(sql, BigInt(cursor.after), perBatch);
      let prev: string = cursor.prevHash;
      for (const row of rows) {
        if (row.prevHash !== prev) {
          findings.push({
            kind: 'audit_chain_broken',
            auditId: row.id,
            problem: 'prev_hash does not match the previous row',
          });
        }
        if (auditRowHash(row) !== row.hash) {
          findings.push({
            kind: 'audit_row_tampered',
            auditId: row.id,
            problem: 'hash does not match the row content',
          });
        }
        // Go on from the stored hash, so one tampered row is one finding, not one per later row.
        prev = row.hash;
      }
      checked += rows.length;
      const last: string = rows.length > 0 ? rows[rows.length - 1]!.id : cursor.after;
      cursor = { after: last, prevHash: prev };
      if (rows.length < perBatch) {
        const [head] = await sql<{ last_id: string; last_hash: string }[]>`
          select last_id::text, last_hash from audit_log_head where singleton`;
        if (head === undefined || head.last_hash !== prev || head.last_id !== last) {
          findings.push({
            kind: 'audit_head_mismatch',
            auditId: head?.last_id ?? '0',
            problem: 'the last row is not the chain head: rows are missing at the end',
          });
        }
        return { checked, findings, repairs: 0, cursor: null };
      }
      await ctx.checkpoint({ cursor: JSON.stringify(cursor), checked });
    }
    return { checked, findings, repairs: 0, cursor: JSON.stringify(cursor) };
  };
}
