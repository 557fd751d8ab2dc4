/** The analytics store's public face: backend detection, setup, ingestion and the query layer. */
export { type AnalyticsBackend, detectBackend } from './backend.ts';
export { type IngestDeps, ingestCardSpend, ingestDecisions, snapshotRisk } from './ingest.ts';
export * from './queries.ts';
export {
  ensurePartitions,
  nativeSetupSql,
  refreshAggregates,
  setUpAnalytics,
  timescaleSetupSql,
} from './setup.ts';

import type { Sql } from '../../shared/db/client.ts';
import type { AnalyticsBackend } from './backend.ts';
import { ingestCardSpend, ingestDecisions, snapshotRisk } from './ingest.ts';
import { refreshAggregates } from './setup.ts';

/** One refresh of the store: copy new rows, take a risk snapshot, refresh the aggregates. */
export async function refreshAnalytics(
  deps: { financial: Sql; analytics: Sql; backend: AnalyticsBackend },
  now = new Date(),
) {
  const spend = await ingestCardSpend(deps);
  const decisions = await ingestDecisions(deps);
  const users = await snapshotRisk(deps, now);
  await refreshAggregates(deps.analytics, deps.backend);
  return { spend, decisions, users };
}
