/**
 * Batches as one array parameter per column: the shape every multi-row statement of
 * shared/db/queries/ takes, so a statement's text depends only on its columns, never on its row count.
 */
import type { Sql, Tx } from './client.ts';

/**
 * One column of a batch: its SQL type and how to read its value from a row, as text (bigints and
 * booleans via toString/String; a Date as an ISO string; null for NULL).
 */
export type Column<T> = readonly [sqlType: string, value: (row: T) => string | null];

const SQL_NAME = /^[a-z_]+$/;

/**
 * `unnest($1::type[], $2::type[], …) with ordinality as <alias>(<names>, n)` over `rows`: one text[]
 * parameter per column, cast in SQL, rows numbered in the order given. The statement text depends only
 * on the columns, never on the batch size, so each connection parses and plans it once, and a 500-row
 * batch binds a dozen parameters instead of thousands. (Text arrays, not postgres.js's own inference,
 * which types an array by its first element and fails for a first null or a Date, and sends a boolean
 * array as a scalar.) Column names and types are code, never data; they are checked all the same.
 */
export function unnestRows<T>(
  tx: Sql | Tx,
  rows: readonly T[],
  columns: Record<string, Column<T>>,
  alias = 'v',
) {
  const names = Object.keys(columns);
  for (const name of [alias, ...names]) if (!SQL_NAME.test(name)) throw new Error(`not an SQL name: ${name}`);
  const args = names
    .map((name) => {
      const [type, value] = columns[name]!;
      if (!SQL_NAME.test(type)) throw new Error(`not an SQL type: ${type}`);
      return tx`${tx.array(rows.map(value), 25)}::${tx.unsafe(type)}[]`;
    })
    .reduce((list, arg) => tx`${list}, ${arg}`);
  return tx`unnest(${args}) with ordinality as ${tx.unsafe(alias)}(${tx.unsafe(names.join(', '))}, n)`;
}
