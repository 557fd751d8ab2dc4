/**
 * The one metrics setup of every Credana process: a prom-client Registry per process (never the
 * module-global one, so tests and several assemblies in one process never share series), with the
 * default process metrics (event-loop lag, GC, heap and RSS, CPU, open handles) and a `service` label
 * on every series it exports.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';

/** The services that export metrics; the `service` label's values. */
export type ServiceName =
  | 'hot-path'
  | 'ledger-writer'
  | 'indexer'
  | 'settlement'
  | 'liquidator'
  | 'anchorer'
  | 'withdrawals'
  | 'supabase-sync'
  | 'scheduler';

/**
 * `createServiceRegistry('settlement')`: a fresh registry exporting the default process metrics, every
 * series labelled `service="settlement"`. Pass it to the service's metric factory.
 */
export function createServiceRegistry(service: ServiceName): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  // Event-loop lag is sampled every 10 ms (prom-client's default) into a histogram read at scrape time.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  return registry;
}
