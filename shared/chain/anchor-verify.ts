/**
 * Checking the audit log against what the database cannot rewrite: the anchors on-chain, and hashes
 * recomputed here, outside the database.
 *
 * Why both: a superuser can disable the triggers, UPDATE an old row and recompute every later hash
 * (and the head), and the database's own `audit_log_verify()` then passes — the chain is consistent,
 * just not the one that was written. The anchor of any row at or after the rewritten one names the
 * old hash, so the rewrite shows as `audit_anchor_mismatch`. A superuser can also replace the SQL
 * function `audit_log_row_hash` to bless an edited row without recomputing anything; recomputing each
 * hash in TypeScript (`auditRowHash`, byte for byte the text the trigger hashes) does not ask the
 * database's functions anything, so that edit shows as `audit_row_tampered`.
 *
 * An anchor counts only once `confirmations` blocks are on top of it (the anchors are read at the
 * block `confirmations` below the head): an anchor a reorg removes was never counted, and the anchorer
 * sends it again (index.ts).
 */
import { createHash } from 'node:crypto';
import type postgres from 'postgres';
import type { Address, PublicClient } from 'viem';
import { auditAnchorAbi } from './contracts/index.ts';
import { LIMITS } from './limits.ts';

export interface AnchorRecord {
  index: number;
  /** The audit_log id anchored. */
  sequence: bigint;
  /** Its hash as anchored: 64 lowercase hex digits, no 0x (as audit_log.hash). */
  head: string;
  /** Block time of the anchor. */
  anchoredAtS: number;
}

export interface ConfirmedAnchors {
  /** The block the anchors were read at (head − confirmations). */
  blockNumber: bigint;
  anchors: AnchorRecord[];
}

/** Every anchor with at least `confirmations` blocks on top of it, oldest first. */
export async function readConfirmedAnchors(
  client: PublicClient,
  contract: Address,
  confirmations: number,
): Promise<ConfirmedAnchors> {
  const head = await client.getBlockNumber({ cacheTime: 0 });
  const blockNumber = head > BigInt(confirmations) ? head - BigInt(confirmations) : 0n;
  // Deployed after that block: nothing confirmed yet (a call would answer "no data").
  const code = await client.getCode({ address: contract, blockNumber });
  if (code === undefined || code === '0x') return { blockNumber, anchors: [] };
  const count = await client.readContract({
    address: contract,
    abi: auditAnchorAbi,
    functionName: 'anchorCount',
    blockNumber,
  });
  if (count > BigInt(LIMITS.anchorsReadMax)) {
    throw new Error(`the anchor contract holds ${count} anchors, more than anchorsReadMax`);
  }
  const anchors: AnchorRecord[] = [];
  for (let from = 0n; from < count; from += BigInt(LIMITS.anchorsPerReadMax)) {
    const page = await client.readContract({
      address: contract,
      abi: auditAnchorAbi,
      functionName: 'anchorsBetween',
      args: [from, from + BigInt(LIMITS.anchorsPerReadMax)],
      blockNumber,
    });
    for (const a of page) {
      anchors.push({
        index: anchors.length,
        sequence: a.sequence,
        head: a.head.slice(2).toLowerCase(),
        anchoredAtS: Number(a.anchoredAt),
      });
    }
  }
  return { blockNumber, anchors };
}

/** An audit row as read for recomputation: `at` and `data` in the text forms the trigger hashes. */
export interface AuditRowText {
  id: string;
  prevHash: string;
  /** to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') */
  atText: string;
  actor: string;
  action: string;
  entityType: string;
  entityId: string;
  /** data::text (jsonb's canonical text). */
  dataText: string;
}

/**
 * The row's hash computed here: sha256 of the text of
 * `jsonb_build_array(prev_hash, id, at, actor, action, entity_type, entity_id, data)`, which jsonb
 * prints as `[e1, e2, …]` with strings escaped as JSON (no \u0000 can be in jsonb; control characters
 * as \u00xx, like JSON.stringify) and `data` as its own canonical text.
 */
export function auditRowHash(row: AuditRowText): string {
  const text = `[${[
    JSON.stringify(row.prevHash),
    row.id,
    JSON.stringify(row.atText),
    JSON.stringify(row.actor),
    JSON.stringify(row.action),
    JSON.stringify(row.entityType),
    JSON.stringify(row.entityId),
    row.dataText,
  ].join(', ')}]`;
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Reads audit rows after `afterId` in id order, in the text forms auditRowHash needs. */
export async function readAuditRows(
  sql: postgres.Sql,
  afterId: bigint,
  limit: number,
): Promise<(AuditRowText & { hash: string })[]> {
  const rows = await sql<
    {
      id: string;
      prev_hash: string;
      hash: string;
      at_text: string;
      actor: string;
      action: string;
      entity_type: string;
      entity_id: string;
      data_text: string;
    }[]
  >`
    select id::text, prev_hash, hash, to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') as at_text,
      actor, action, entity_type, entity_id, data::text as data_text
    from audit_log where audit_log.id > ${afterId.toString()}::bigint order by audit_log.id limit ${limit}`;
  return rows.map((r) => ({
    id: r.id,
    prevHash: r.prev_hash,
    hash: r.hash,
    atText: r.at_text,
    actor: r.actor,
    action: r.action,
    entityType: r.entity_type,
    entityId: r.entity_id,
    dataText: r.data_text,
  }));
}

export type AnchorFinding =
  | {
      kind: 'audit_anchor_mismatch';
      auditId: string;
      anchorIndex: number;
      anchoredHead: string;
      storedHash: string;
    }
  | { kind: 'audit_anchor_row_missing'; auditId: string; anchorIndex: number; anchoredHead: string }
  | { kind: 'audit_anchor_stale'; auditId: string; lastAnchoredId: string; unanchoredSinceS: number };

/**
 * Every confirmed anchor against the stored row it names, and whether rows have waited too long for
 * an anchor (`staleAfterS`; the anchorer stopped, or someone keeps it from running while rewriting
 * the unanchored tail).
 */
export async function checkAnchors(
  sql: postgres.Sql,
  anchors: readonly AnchorRecord[],
  options: { nowS: number; staleAfterS: number },
): Promise<AnchorFinding[]> {
  const findings: AnchorFinding[] = [];
  const ids = anchors.map((a) => a.sequence.toString());
  const stored = new Map<string, string>();
  for (let i = 0; i < ids.length; i += 10_000) {
    const rows = await sql<{ id: string; hash: string }[]>`
      select id::text, hash from audit_log where id = any(${ids.slice(i, i + 10_000)}::bigint[])`;
    for (const r of rows) stored.set(r.id, r.hash);
  }
  for (const anchor of anchors) {
    const auditId = anchor.sequence.toString();
    const hash = stored.get(auditId);
    if (hash === undefined) {
      findings.push({
        kind: 'audit_anchor_row_missing',
        auditId,
        anchorIndex: anchor.index,
        anchoredHead: anchor.head,
      });
    } else if (hash !== anchor.head) {
      findings.push({
        kind: 'audit_anchor_mismatch',
        auditId,
        anchorIndex: anchor.index,
        anchoredHead: anchor.head,
        storedHash: hash,
      });
    }
  }
  const lastAnchored = anchors.length === 0 ? 0n : anchors[anchors.length - 1]!.sequence;
  const [first] = await sql<{ id: string; at_s: string }[]>`
    select id::text, extract(epoch from at)::bigint::text as at_s from audit_log
    where audit_log.id > ${lastAnchored.toString()}::bigint order by audit_log.id limit 1`;
  if (first !== undefined && options.nowS - Number(first.at_s) > options.staleAfterS) {
    findings.push({
      kind: 'audit_anchor_stale',
      auditId: first.id,
      lastAnchoredId: lastAnchored.toString(),
      unanchoredSinceS: Number(first.at_s),
    });
  }
  return findings;
}
