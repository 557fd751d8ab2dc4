/**
 * `npm run report -- <name> [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--csv <file>] [--refresh]`
 * Prints one of the risk team's reports as a table (and writes it as CSV with --csv), reading the
 * analytics store (ANALYTICS_DATABASE_URL, default the primary). --refresh first ingests new rows,
 * takes a risk snapshot and refreshes the aggregates. Reports: spend-by-day, approval-rate,
 * decline-reasons, health-factors, closest-to-liquidation, holds-by-age. Period defaults to the last 7 days.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { formatTable, toCsv } from '../reconciler/analytics/format.ts';
import {
  detectBackend,
  REPORTS,
  type ReportName,
  refreshAnalytics,
  setUpAnalytics,
} from '../reconciler/analytics/index.ts';
import { limits } from '../reconciler/analytics/limits.ts';
import { analyticsDatabaseUrl, analyticsHistory, configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { openReplicaReader } from '../shared/db/replica.ts';

function usage(message: string): never {
  process.stderr.write(
    `${message}\nusage: npm run report -- <${Object.keys(REPORTS).join('|')}> [--from d] [--to d] [--csv file] [--refresh]\n`,
  );
  process.exit(64);
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    from: { type: 'string' },
    to: { type: 'string' },
    csv: { type: 'string' },
    refresh: { type: 'boolean' },
  },
});
const name = positionals[0];
if (name === undefined || !(name in REPORTS)) usage(`unknown report ${JSON.stringify(name ?? '')}`);
const day = (text: string | undefined, fallbackMs: number) => {
  if (text === undefined) return new Date(fallbackMs);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) usage('dates are YYYY-MM-DD (UTC)');
  return new Date(`${text}T00:00:00Z`);
};
const todayMs = Math.floor(Date.now() / 86_400_000) * 86_400_000;
const period = { from: day(values.from, todayMs - 7 * 86_400_000), to: day(values.to, todayMs + 86_400_000) };

const config = configFromProcess();
const analytics = createDatabase({
  url: analyticsDatabaseUrl(config),
  poolMax: 2,
  statementTimeoutMs: limits.statementTimeoutMs,
  applicationName: 'credana-report',
});
try {
  if (values.refresh === true) {
    const financial = createDatabase({
      url: config.DATABASE_URL,
      poolMax: 2,
      applicationName: 'credana-report',
    });
    // Ingestion only reads the financial database, and may lag: the replica when it keeps up.
    const replica = openReplicaReader(config, financial.sql, {
      name: 'report',
      // Logs to stderr: stdout carries the report.
      logger: pino({ name: 'report', level: config.LOG_LEVEL }, pino.destination(2)),
    });
    try {
      const backend = await detectBackend(analytics.sql);
      const history = analyticsHistory(config);
      await setUpAnalytics(analytics.sql, backend, history);
      await refreshAnalytics({
        financial: await replica.reader.read(),
        analytics: analytics.sql,
        backend,
        history,
      });
    } finally {
      await replica.close();
      await financial.close();
    }
  }
  const report = REPORTS[name as ReportName];
  const rows = await report.run(analytics.sql, period);
  process.stdout.write(`${formatTable(rows)}\n`);
  if (values.csv !== undefined) {
    writeFileSync(values.csv, toCsv(rows));
    process.stdout.write(`wrote ${rows.length} rows to ${values.csv}\n`);
  }
} finally {
  await analytics.close();
}
