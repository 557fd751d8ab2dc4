// Proves the Grafana dashboard (ops/grafana/credana.json) and the Prometheus rules (ops/prometheus/rules.yml) only query metrics that exist: every metric name in every PromQL expression is one the services really register — collected from the real registries, assembled as each process assembles them (the hot path by createHotPath on the test Postgres and Redis, the others from their metric factories on createServiceRegistry, with their health gauges) — or Prometheus's own `up`, or a recording rule; and that the name check itself catches a misspelt metric.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createIndexerMetrics } from '../../indexer/runtime/index.ts';
import { createLedgerWriterMetrics } from '../../ledger-writer/metrics.ts';
import { createLiquidatorMetrics } from '../../liquidator/metrics.ts';
import { createReconcileMetrics } from '../../reconciler/metrics.ts';
import { createSettlementMetrics } from '../../settlement/index.ts';
import { chainServiceReadiness } from '../../shared/chain/health.ts';
import { createRpc } from '../../shared/chain/rpc/index.ts';
import { createProbes, createServiceRegistry } from '../../shared/observability/index.ts';
import { createDependencyProbe } from '../../shared/observability/readiness.ts';
import { durabilityGauge } from '../../shared/redis/durability.ts';
import { createSyncMetrics } from '../../supabase/sync/metrics.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { type HotPath, startHotPath } from '../../test/support/hot-path.ts';
import { createWithdrawalMetrics } from '../../withdrawals/metrics.ts';

const HERE = import.meta.dirname;
const DASHBOARD = path.join(HERE, 'credana.json');
const RULES = path.resolve(HERE, '../prometheus/rules.yml');

let services: TestServices;
let hotPath: HotPath;
const registries = new Map<string, Registry>();

beforeAll(async () => {
  services = await setUpServices();
  hotPath = await startHotPath(services);
  const { sql } = services.database;
  const redis = services.redis;
  // Never called here: the readiness gauges are registered at construction, and nothing is scraped.
  const client = createRpc({ url: 'http://127.0.0.1:1', chainId: 31_337 }).client;

  // As hot-path/main.ts: createHotPath's registry, plus the durability gauge.
  durabilityGauge(hotPath.metrics.registry, true);
  registries.set('hot-path', hotPath.metrics.registry);
  // As ledger-writer/main.ts.
  const writer = createLedgerWriterMetrics(createServiceRegistry('ledger-writer'));
  durabilityGauge(writer.registry, true);
  createDependencyProbe({ redis, sql, registry: writer.registry });
  registries.set('ledger-writer', writer.registry);
  // As indexer/main.ts, settlement/main.ts, liquidator/main.ts, withdrawals/main.ts.
  const indexer = createIndexerMetrics(createServiceRegistry('indexer'));
  chainServiceReadiness({ registry: indexer.registry, sql, client, redis });
  registries.set('indexer', indexer.registry);
  const settlement = createSettlementMetrics(createServiceRegistry('settlement'));
  chainServiceReadiness({ registry: settlement.registry, sql, client, lockHeld: async () => true });
  registries.set('settlement', settlement.registry);
  const liquidator = createLiquidatorMetrics(createServiceRegistry('liquidator'));
  chainServiceReadiness({ registry: liquidator.registry, sql, client, lockHeld: async () => true });
  registries.set('liquidator', liquidator.registry);
  const withdrawals = createWithdrawalMetrics(createServiceRegistry('withdrawals'));
  chainServiceReadiness({ registry: withdrawals.registry, sql, client, redis });
  registries.set('withdrawals', withdrawals.registry);
  // As supabase/sync/main.ts and reconciler/scheduler.ts.
  const sync = createSyncMetrics(createServiceRegistry('supabase-sync'));
  createProbes(sync.registry, {
    postgres: async () => true,
    supabase: async () => true,
    redis: async () => true,
  });
  registries.set('supabase-sync', sync.registry);
  registries.set('scheduler', createReconcileMetrics(createServiceRegistry('scheduler')).registry);
}, 60_000);

afterAll(async () => {
  await hotPath?.close();
  await services?.close();
});

/** The series names a registry exports: histograms as _bucket/_sum/_count, summaries as name/_sum/_count. */
function exportedNames(registry: Registry): string[] {
  return registry.getMetricsAsArray().flatMap((metric) => {
    // prom-client types `type` as a numeric enum; at run time it is the exposition's word ('histogram').
    const { name } = metric;
    const type = String(metric.type);
    if (type === 'histogram') return [`${name}_bucket`, `${name}_sum`, `${name}_count`];
    if (type === 'summary') return [name, `${name}_sum`, `${name}_count`];
    return [name];
  });
}

const KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
]);

/** Metric names a PromQL expression selects (not functions, aggregations, keywords or label names). */
function metricNamesIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // strings (label values)
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // range selectors
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ''); // label lists
  const names: string[] = [];
  for (const match of bare.matchAll(/(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = bare.slice((match.index ?? 0) + match[0].length).trimStart();
    if (rest.startsWith('(') || KEYWORDS.has(match[0])) continue;
    names.push(match[0]);
  }
  return names;
}

interface Dashboard {
  uid: string;
  panels: { id: number; type: string; title: string; targets?: { expr: string }[] }[];
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
const rules = parse(readFileSync(RULES, 'utf8')) as {
  groups: { rules: { record?: string; alert?: string; expr: string }[] }[];
};
const recorded = rules.groups.flatMap((g) =>
  g.rules.flatMap((r) => (r.record === undefined ? [] : [r.record])),
);

function known(): Set<string> {
  const names = new Set<string>(['up', ...recorded]);
  for (const registry of registries.values()) for (const name of exportedNames(registry)) names.add(name);
  return names;
}

function unknownNames(exprs: readonly { where: string; expr: string }[]): string[] {
  const names = known();
  return exprs.flatMap(({ where, expr }) =>
    metricNamesIn(expr)
      .filter((name) => !names.has(name))
      .map((name) => `${where}: ${name}`),
  );
}

describe('ops/grafana/credana.json and ops/prometheus/rules.yml', () => {
  it('collects names from every service, default process metrics included', () => {
    expect([...registries.keys()].sort()).toEqual(
      [
        'hot-path',
        'indexer',
        'ledger-writer',
        'liquidator',
        'scheduler',
        'settlement',
        'supabase-sync',
        'withdrawals',
      ].sort(),
    );
    for (const [service, registry] of registries) {
      const names = exportedNames(registry);
      expect(names, service).toContain('nodejs_eventloop_lag_p99_seconds');
      expect(names, service).toContain('nodejs_gc_duration_seconds_bucket');
      expect(names, service).toContain('process_cpu_seconds_total');
    }
  });

  it('every dashboard panel queries only registered metrics', () => {
    const panels = dashboard.panels.filter((p) => p.type !== 'row');
    expect(panels.length).toBeGreaterThanOrEqual(15);
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
    const exprs = panels.flatMap((p) => {
      expect(p.targets?.length ?? 0, `panel "${p.title}" has no query`).toBeGreaterThan(0);
      return (p.targets ?? []).map((t) => ({ where: p.title, expr: t.expr }));
    });
    expect(exprs.flatMap((e) => metricNamesIn(e.expr)).length).toBeGreaterThan(30);
    expect(unknownNames(exprs)).toEqual([]);
  });

  it('every recording and alerting rule queries only registered metrics', () => {
    const exprs = rules.groups.flatMap((g) =>
      g.rules.map((r) => ({ where: r.alert ?? r.record ?? '?', expr: r.expr })),
    );
    expect(exprs.length).toBeGreaterThan(20);
    expect(unknownNames(exprs)).toEqual([]);
  });

  it('catches a metric no service registers, and reads names through functions, matchers and label lists', () => {
    expect(
      metricNamesIn(
        'histogram_quantile(0.99, sum by (le, source) (rate(credana_decision_latency_seconds_bucket{source="redis"}[5m]))) / on (job) group_left up',
      ),
    ).toEqual(['credana_decision_latency_seconds_bucket', 'up']);
    expect(unknownNames([{ where: 'test', expr: 'sum(rate(credana_decisions_totl[5m]))' }])).toEqual([
      'test: credana_decisions_totl',
    ]);
  });
});
