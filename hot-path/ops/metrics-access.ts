/** Who may read /metrics on a public port: shared/observability/metrics-access.ts. */
export { metricsTokenPresented } from '../../shared/observability/metrics-access.ts';
