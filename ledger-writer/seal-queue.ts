/**
 * Seals the merchant names waiting in `merchant_names_unsealed` (queued by the hot path's Postgres
 * fallback, which never holds a data key, and by this writer while it held none, and the names the
 * migration 0013 found in plaintext) into `authorizations.merchant_name_sealed`, oldest first.
 *
 * Each queued row is removed in the statement that stores its sealed name, and only if it still holds
 * the plaintext that was sealed, so a crash or a second writer doing the same rows changes nothing: the
 * first to commit takes them. A name is stored only where none is (a row sealed meanwhile keeps its
 * value). The authorization's `updated_at` moves, so the Supabase projection shows the name.
 */
import type { Sql } from '../shared/db/client.ts';
import { storeSealedNames } from '../shared/db/queries/authorizations.ts';
import type { MerchantNames } from '../shared/hsm/merchant-names.ts';
import { limits } from './limits.ts';

export interface SealQueueResult {
  sealed: number;
  /** True when names are left: more than one batch, or no data key right now. */
  more: boolean;
}

/** Seals up to `rowsMax` queued names; stops at the first it cannot seal (no data key now). */
export async function sealQueuedNames(
  sql: Sql,
  names: MerchantNames,
  rowsMax: number = limits.sealQueueRowsMax,
): Promise<SealQueueResult> {
  const queued = await sql<{ authorization_id: string; merchant_name: string }[]>`
    select authorization_id, merchant_name from merchant_names_unsealed
    order by created_at, authorization_id limit ${rowsMax + 1}`;
  const batch = queued.slice(0, rowsMax);
  const rows: { id: string; name: string; sealed: Buffer }[] = [];
  for (const row of batch) {
    const sealed = await names.seal(row.authorization_id, row.merchant_name);
    if (sealed === null) break;
    rows.push({ id: row.authorization_id, name: row.merchant_name, sealed });
  }
  if (rows.length === 0) return { sealed: 0, more: batch.length > 0 };
  const stored = await sql.begin((tx) => storeSealedNames(tx, rows));
  return { sealed: stored, more: queued.length > rowsMax || rows.length < batch.length };
}

/** How many names wait to be sealed, counted up to `countMax` (a gauge, not an audit). */
export async function unsealedNames(sql: Sql, countMax = 10_000): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from (select 1 from merchant_names_unsealed limit ${countMax}) as q`;
  return row?.n ?? 0;
}

export interface SealQueueLoop {
  stop(): Promise<void>;
}

/** Runs `sealQueuedNames` every `intervalMs` (at once again while a full batch was sealed). */
export function startSealQueue(deps: {
  sql: Sql;
  names: MerchantNames;
  intervalMs?: number;
  onError: (error: unknown) => void;
  onSealed?: (count: number) => void;
  /** Told after every round how many names still wait (unsealedNames). */
  onWaiting?: (count: number) => void;
}): SealQueueLoop {
  const intervalMs = deps.intervalMs ?? limits.sealQueueIntervalMs;
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> | null = null;
  const tick = () => {
    running = (async () => {
      let again = false;
      try {
        const result = await sealQueuedNames(deps.sql, deps.names);
        if (result.sealed > 0) deps.onSealed?.(result.sealed);
        again = result.more && result.sealed > 0;
        if (deps.onWaiting !== undefined) deps.onWaiting(await unsealedNames(deps.sql));
      } catch (error) {
        deps.onError(error);
      }
      if (!stopped) timer = setTimeout(tick, again ? 0 : intervalMs);
    })();
  };
  timer = setTimeout(tick, 0);
  return {
    async stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      await running;
    },
  };
}
