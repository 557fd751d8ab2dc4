/** Plain-text tables for the terminal and RFC 4180 CSV, for the report CLI. */
import type { ReportRow } from './queries.ts';

export function formatTable(rows: readonly ReportRow[]): string {
  if (rows.length === 0) return '(no rows)';
  const columns = Object.keys(rows[0]!);
  const cell = (row: ReportRow, c: string) => row[c] ?? '';
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r, c).length)));
  // Numbers right-aligned, text left-aligned.
  const numeric = columns.map((c) => rows.every((r) => /^-?[\d.]*$/.test(cell(r, c))));
  const line = (values: string[]) =>
    values
      .map((v, i) => (numeric[i] ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [
    line(columns),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map((r) => line(columns.map((c) => cell(r, c)))),
  ].join('\n');
}

export function toCsv(rows: readonly ReportRow[]): string {
  if (rows.length === 0) return '';
  const columns = Object.keys(rows[0]!);
  const quote = (v: string) => (/[",\n\r]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);
  return `${[columns.join(','), ...rows.map((r) => columns.map((c) => quote(r[c] ?? '')).join(','))].join('\r\n')}\r\n`;
}
