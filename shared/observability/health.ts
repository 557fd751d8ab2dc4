/**
 * Readiness probes of a service's dependencies and the `credana_dependency_up` gauge, shared by every
 * service with an internal listener. A probe answers within PROBE_TIMEOUT_MS whatever the dependency
 * does, and at most one check per dependency is in flight (a dead host must not pile up queries).
 */
import { Gauge, type Registry } from 'prom-client';

/** A probe answers within this, whatever the dependency does (a dead host must not stall /readyz). */
export const PROBE_TIMEOUT_MS = 1_000;

/**
 * Runs `check` with at most one call in flight: a call while the previous check still waits shares it
 * instead of queueing another behind it; each caller gives up after PROBE_TIMEOUT_MS. A check that
 * resolves `false` or throws means "down".
 */
export function singleFlight(check: () => Promise<unknown>): () => Promise<boolean> {
  let pending: Promise<boolean> | null = null;
  return async () => {
    pending ??= check()
      .then(
        (result) => result !== false,
        () => false,
      )
      .finally(() => {
        pending = null;
      });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS);
    });
    try {
      return await Promise.race([pending, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
}

export type ProbeResults<D extends string> = Record<D, boolean>;

/**
 * `createProbes(registry, { postgres: () => sql\`select 1\`, chain: () => client.getBlockNumber() })`:
 * one function checking every dependency at once, which also sets
 * `credana_dependency_up{dependency}` (1 up, 0 down) — when called (by /readyz) and at every scrape.
 */
export function createProbes<D extends string>(
  registry: Registry,
  checks: Record<D, () => Promise<unknown>>,
): () => Promise<ProbeResults<D>> {
  const names = Object.keys(checks) as D[];
  const flights = names.map((name) => [name, singleFlight(checks[name])] as const);
  const probe = async (): Promise<ProbeResults<D>> => {
    const results = await Promise.all(flights.map(async ([name, run]) => [name, await run()] as const));
    for (const [name, up] of results) gauge.set({ dependency: name }, up ? 1 : 0);
    return Object.fromEntries(results) as ProbeResults<D>;
  };
  const gauge: Gauge<'dependency'> = new Gauge({
    name: 'credana_dependency_up',
    help: 'Whether a dependency answered its probe (1) or not (0), measured at each scrape and /readyz',
    labelNames: ['dependency'] as const,
    registers: [registry],
    async collect() {
      await probe();
    },
  });
  return probe;
}

/** What /readyz answers: `ready` (200 when true, else 503), and what it looked at. */
export type Readiness = () => Promise<{ ready: boolean }>;
