/** The analytics store's public face: backend detection, setup, ingestion and the query layer. */
export { type AnalyticsBackend, detectBackend } from './backend.ts';
export { type IngestDeps, ingestCardSpend, ingestDecisions, snapshotRisk } from './ingest.ts';
export * from './queries.ts';
export { ANALYTICS_READ_ROLE, readAsAnalytics } from './read-as.ts';
export {
  type AnalyticsHistory,
  applyRetention,
  DEFAULT_HISTORY,
  ensurePartitions,
  nativeSetupSql,
  refreshAggregates,
  retentionCutoff,
  setUpAnalytics,
  timescaleSetupSql,
} from './setup.ts';

import type { Sql } from '../../shared/db/client.ts';
import type { AnalyticsBackend } from './backend.ts';
import { ingestCardSpend, ingestDecisions, snapshotRisk } from './ingest.ts';
import {
  type AnalyticsHistory,
  applyRetention,
  DEFAULT_HISTORY,
  refreshAggregates,
  retentionCutoff,
} from './setup.ts';

/**
 * One refresh of the store: copy new rows (none past the retention), take a risk snapshot, drop what
 * is past the retention (native; TimescaleDB's policies do it there), refresh the aggregates.
 */
export async function refreshAnalytics(
  deps: { financial: Sql; analytics: Sql; backend: AnalyticsBackend; history?: AnalyticsHistory },
  now = new Date(),
) {
  const history = deps.history ?? DEFAULT_HISTORY;
  const ingest = { ...deps, retainFrom: retentionCutoff(history, now) };
  const spend = await ingestCardSpend(ingest);
  const decisions = await ingestDecisions(ingest);
  const users = await snapshotRisk(ingest, now);
  const dropped = await applyRetention(deps.analytics, deps.backend, history, now);
  await refreshAggregates(deps.analytics, deps.backend);
  return { spend, decisions, users, dropped: dropped.length };
}
