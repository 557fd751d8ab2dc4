/**
 * Stripe Issuing exports, parsed with zod at the file boundary.
 *
 * Accepted shapes:
 * - JSON: a list object as the API's list endpoints return it (`GET /v1/issuing/transactions`,
 *   `GET /v1/issuing/authorizations`): `{ object: 'list', data: [...], has_more, url }`, or a plain
 *   array of such objects (pages concatenated).
 * - CSV (RFC 4180, header row) with the columns of the Issuing transactions export. Stripe does not
 *   publish that column list; we read these names (case-insensitive, spaces or underscores, a
 *   trailing ` (UTC)` ignored), and name the assumption in docs/reconciliation.md:
 *   `id`, `type` (capture | refund), `amount`, `currency`, `created`, `authorization`, `card`,
 *   optional `merchant_data.category_code` / `merchant category code`, and for authorizations
 *   `id`, `status`, `approved`, `amount`, `created`. Amounts are integers in the smallest unit
 *   (Stripe's report convention), or decimals like `-12.34` (Dashboard downloads), converted exactly;
 *   `created` is a Unix timestamp or `YYYY-MM-DD HH:MM[:SS]` in UTC.
 */
import { readFileSync, statSync } from 'node:fs';
import { z } from 'zod';
import { limits } from './limits.ts';

export interface StripeTransaction {
  id: string;
  type: 'capture' | 'refund';
  /** Stripe's sign: a capture is negative (money out of the Issuing balance), a refund positive. */
  amountCents: bigint;
  createdS: number;
  authorizationId: string | null;
  cardId: string | null;
}

export interface StripeAuthorization {
  id: string;
  status: 'pending' | 'closed' | 'reversed' | 'expired';
  approved: boolean;
  amountCents: bigint;
  createdS: number;
}

const transactionObject = z.object({
  id: z.string().regex(/^ipi_[A-Za-z0-9_]+$/),
  object: z.literal('issuing.transaction').optional(),
  type: z.enum(['capture', 'refund']),
  amount: z.number().int(),
  currency: z.string().length(3),
  created: z.number().int().nonnegative(),
  authorization: z
    .union([z.string(), z.object({ id: z.string() })])
    .nullable()
    .optional(),
  card: z
    .union([z.string(), z.object({ id: z.string() })])
    .nullable()
    .optional(),
});

const authorizationObject = z.object({
  id: z.string().regex(/^iauth_[A-Za-z0-9_]+$/),
  object: z.literal('issuing.authorization').optional(),
  status: z.enum(['pending', 'closed', 'reversed', 'expired']),
  approved: z.boolean(),
  amount: z.number().int(),
  created: z.number().int().nonnegative(),
});

const idOf = (v: string | { id: string } | null | undefined) =>
  v == null ? null : typeof v === 'string' ? v : v.id;

const issueOf = (error: z.ZodError) =>
  `${error.issues[0]?.path.join('.') ?? ''} ${error.issues[0]?.message ?? 'invalid'}`.trim();

/**
 * One Issuing Transaction object (an export row or an API list item). Throws `<label>: <field> <why>`;
 * the message names the field, never the whole object.
 */
export function parseTransactionObject(item: unknown, label: string): StripeTransaction {
  const parsed = transactionObject.safeParse(item);
  if (!parsed.success) throw new Error(`${label}: ${issueOf(parsed.error)}`);
  const t = parsed.data;
  return {
    id: t.id,
    type: t.type,
    amountCents: BigInt(t.amount),
    createdS: t.created,
    authorizationId: idOf(t.authorization),
    cardId: idOf(t.card),
  };
}

/** One Issuing Authorization object (an export row or an API list item). */
export function parseAuthorizationObject(item: unknown, label: string): StripeAuthorization {
  const parsed = authorizationObject.safeParse(item);
  if (!parsed.success) throw new Error(`${label}: ${issueOf(parsed.error)}`);
  const a = parsed.data;
  return {
    id: a.id,
    status: a.status,
    approved: a.approved,
    amountCents: BigInt(a.amount),
    createdS: a.created,
  };
}

function listItems(value: unknown): unknown[] {
  if (Array.isArray(value)) return value.flatMap((v) => (isList(v) ? v.data : [v]));
  if (isList(value)) return value.data;
  throw new Error('a Stripe JSON export must be a list object ({ object: "list", data: [...] }) or an array');
}

function isList(value: unknown): value is { data: unknown[] } {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { object?: unknown }).object === 'list' &&
    Array.isArray((value as { data?: unknown }).data)
  );
}

/** RFC 4180: quoted fields, doubled quotes, commas and newlines inside quotes. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      if (row.some((f) => f !== '')) rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  row.push(field);
  if (row.some((f) => f !== '')) rows.push(row);
  return rows;
}

const normalise = (name: string) =>
  name
    .trim()
    .toLowerCase()
    .replace(/\s*\(utc\)$/, '')
    .replace(/[\s.]+/g, '_');

/** Exact cents from `-1234` (smallest unit) or `-12.34` (decimal). */
export function parseAmountCents(text: string): bigint {
  const t = text.trim().replace(/,/g, '');
  const decimal = /^(-?)(\d+)\.(\d{1,2})$/.exec(t);
  if (decimal !== null) {
    const cents = BigInt(decimal[2]!) * 100n + BigInt(decimal[3]!.padEnd(2, '0'));
    return decimal[1] === '-' ? -cents : cents;
  }
  if (!/^-?\d+$/.test(t)) throw new Error(`not an amount: ${JSON.stringify(text)}`);
  return BigInt(t);
}

function parseCreated(text: string): number {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  const ms = Date.parse(`${t.replace(' ', 'T')}${/Z|[+-]\d\d:?\d\d$/.test(t) ? '' : 'Z'}`);
  if (Number.isNaN(ms)) throw new Error(`not a timestamp: ${JSON.stringify(text)}`);
  return Math.floor(ms / 1000);
}

function csvRecords(text: string): Record<string, string>[] {
  const [header, ...rows] = parseCsv(text);
  if (header === undefined) return [];
  const names = header.map(normalise);
  return rows.map((cells) => Object.fromEntries(names.map((n, i) => [n, cells[i] ?? ''])));
}

function readBounded(path: string): string {
  const size = statSync(path).size;
  if (size > limits.stripeExportBytesMax) {
    throw new Error(`${path} is ${size} bytes, over the limit of ${limits.stripeExportBytesMax}`);
  }
  return readFileSync(path, 'utf8');
}

function checkRows(n: number): void {
  if (n > limits.stripeExportRowsMax)
    throw new Error(`the export has ${n} rows, over the limit of ${limits.stripeExportRowsMax}`);
}

const pick = (record: Record<string, string>, ...names: string[]) => {
  for (const n of names) {
    const v = record[n];
    if (v !== undefined && v !== '') return v;
  }
  return undefined;
};

/** Parses a transactions export (JSON or CSV, chosen by the first non-blank character). */
export function parseTransactionsExport(text: string): StripeTransaction[] {
  if (/^\s*[[{]/.test(text)) {
    const items = listItems(JSON.parse(text));
    checkRows(items.length);
    return items.map((item, i) => parseTransactionObject(item, `transaction ${i}`));
  }
  const records = csvRecords(text);
  checkRows(records.length);
  return records.map((r, i) => {
    const row = z
      .object({
        id: z.string().regex(/^ipi_[A-Za-z0-9_]+$/),
        type: z.enum(['capture', 'refund']),
        amount: z.string().min(1),
        created: z.string().min(1),
      })
      .safeParse({
        id: pick(r, 'id', 'transaction_id'),
        type: pick(r, 'type'),
        amount: pick(r, 'amount'),
        created: pick(r, 'created', 'created_at', 'date'),
      });
    if (!row.success)
      throw new Error(
        `CSV row ${i + 2}: ${row.error.issues[0]?.path.join('.')} ${row.error.issues[0]?.message}`,
      );
    return {
      id: row.data.id,
      type: row.data.type,
      amountCents: parseAmountCents(row.data.amount),
      createdS: parseCreated(row.data.created),
      authorizationId: pick(r, 'authorization', 'authorization_id') ?? null,
      cardId: pick(r, 'card', 'card_id') ?? null,
    };
  });
}

/** Parses an authorizations export (JSON or CSV). */
export function parseAuthorizationsExport(text: string): StripeAuthorization[] {
  if (/^\s*[[{]/.test(text)) {
    const items = listItems(JSON.parse(text));
    checkRows(items.length);
    return items.map((item, i) => parseAuthorizationObject(item, `authorization ${i}`));
  }
  const records = csvRecords(text);
  checkRows(records.length);
  return records.map((r, i) => {
    const row = z
      .object({
        id: z.string().regex(/^iauth_[A-Za-z0-9_]+$/),
        status: z.enum(['pending', 'closed', 'reversed', 'expired']),
        approved: z.enum(['true', 'false']),
        amount: z.string().min(1),
        created: z.string().min(1),
      })
      .safeParse({
        id: pick(r, 'id', 'authorization_id'),
        status: pick(r, 'status'),
        approved: pick(r, 'approved')?.toLowerCase(),
        amount: pick(r, 'amount'),
        created: pick(r, 'created', 'created_at'),
      });
    if (!row.success)
      throw new Error(
        `CSV row ${i + 2}: ${row.error.issues[0]?.path.join('.')} ${row.error.issues[0]?.message}`,
      );
    return {
      id: row.data.id,
      status: row.data.status,
      approved: row.data.approved === 'true',
      amountCents: parseAmountCents(row.data.amount),
      createdS: parseCreated(row.data.created),
    };
  });
}

export const readTransactionsExport = (path: string) => parseTransactionsExport(readBounded(path));
export const readAuthorizationsExport = (path: string) => parseAuthorizationsExport(readBounded(path));

/** Authorizations Stripe has closed, reversed or expired (the holds job releases their holds). */
export function closedAuthorizationIds(authorizations: readonly StripeAuthorization[]): Set<string> {
  return new Set(authorizations.filter((a) => a.status !== 'pending').map((a) => a.id));
}
