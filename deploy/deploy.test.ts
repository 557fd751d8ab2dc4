// Proves the deploy files (Dockerfile, .dockerignore, deploy/compose.yaml, deploy/k8s/*, PgBouncer, Redis and Prometheus configs) refer only to what exists — npm scripts, config variables, ports, probe paths — by parsing each and checking it against the repository, and, where this machine can run the part, runs it: the hot path's probe paths by real requests, PgBouncer with deploy/pgbouncer/pgbouncer.ini in front of a private PostgreSQL, Redis with deploy/redis/redis.conf through the services' durability check, promtool on the Prometheus config, and SIGTERM through `npm run` with the image's shell setting. Docker and Kubernetes themselves cannot run here.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { createHotPath } from '../hot-path/server.ts';
import { tryExclusive } from '../indexer/store/index.ts';
import { SCHEDULES } from '../scripts/reconcile/qstash-schedules.ts';
import { CONFIG_VARIABLES, type Config, loadConfig, SECRET_VARIABLES } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { createRedis } from '../shared/redis/client.ts';
import { checkRedisDurability } from '../shared/redis/durability.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { freePort, startPostgresCluster, startRedisServer } from '../test/support/processes.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const packageJson = JSON.parse(read('package.json')) as {
  scripts: Record<string, string>;
  devDependencies: Record<string, string>;
};
const configVariables = new Set(CONFIG_VARIABLES);

// ── Parsing ─────────────────────────────────────────────────────────────────────────────────────

interface DockerInstruction {
  stage: string;
  op: string;
  args: string;
}
/** The Dockerfile as instructions (continuation lines joined, comments dropped), each with its stage. */
function dockerfile(): DockerInstruction[] {
  const lines = read('Dockerfile')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  let stage = '';
  return lines.map((line) => {
    const [op = '', ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    if (op.toUpperCase() === 'FROM') stage = /\sAS\s+(\S+)/i.exec(line)?.[1] ?? '';
    return { stage, op: op.toUpperCase(), args };
  });
}

/** `npm run <script> [-- args]` → the script, which must exist in package.json. */
function npmScriptOf(command: readonly string[]): string {
  expect(command.slice(0, 2), command.join(' ')).toEqual(['npm', 'run']);
  const script = command[2] ?? '';
  expect(Object.keys(packageJson.scripts), `npm script ${script}`).toContain(script);
  return script;
}

function envFile(file: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of read(file).split('\n')) {
    const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (match !== null) env[match[1] as string] = match[2] as string;
  }
  return env;
}

const compose = parseYaml(read('deploy/compose.yaml'), { merge: true }) as {
  services: Record<
    string,
    {
      image?: string;
      command?: string[];
      environment?: Record<string, string>;
      env_file?: string[];
      expose?: string[];
      healthcheck?: { test: string[] };
      deploy?: { replicas?: number };
    }
  >;
};
const credanaImage = 'credana-backend:latest';
const sharedEnv = envFile('deploy/credana.env.example');
const secretsEnv = envFile('deploy/secrets.env.example');

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are checked field by field below.
type K8sObject = any;
const k8sDir = path.join(ROOT, 'deploy/k8s');
const k8sObjects: K8sObject[] = readdirSync(k8sDir)
  .filter((file) => file.endsWith('.yaml'))
  .flatMap((file) =>
    parseAllDocuments(readFileSync(path.join(k8sDir, file), 'utf8')).map((doc) => {
      expect(doc.errors, file).toEqual([]);
      return { ...doc.toJS(), file };
    }),
  );
const configMap = k8sObjects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'credana-config');
const k8sEnv = configMap.data as Record<string, string>;

/** Every container of a workload (Deployment, Job, CronJob). */
function podSpecOf(object: K8sObject): K8sObject {
  return object.kind === 'CronJob' ? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec;
}
const workloads = k8sObjects.filter((o) => ['Deployment', 'Job', 'CronJob'].includes(o.kind));

/**
 * The port variable each service's HTTP listener reads, by npm script; the scheduler takes --port.
 * A probe or scrape on another port would hit nothing.
 */
const listenerPorts: Record<string, (env: Record<string, string>, command: string[]) => number[]> = {
  'start:hot-path': (env) => [Number(env['HOT_PATH_PORT']), Number(env['HOT_PATH_METRICS_PORT'])],
  'start:ledger-writer': (env) => [Number(env['LEDGER_WRITER_PORT'])],
  'start:withdrawals': (env) => [Number(env['WITHDRAWALS_PORT'])],
  'start:supabase-sync': (env) => [Number(env['SUPABASE_SYNC_METRICS_PORT'])],
  scheduler: (_env, command) => [Number(command[command.indexOf('--port') + 1])],
};

/**
 * GET paths each service answers, read from its entry point's routes. The hot path's are also asked
 * for real below (probe paths answer 200).
 */
function routesOf(script: string): string[] {
  const files: Record<string, string[]> = {
    'start:hot-path': ['hot-path/app.ts', 'hot-path/ops/internal-app.ts'],
    'start:ledger-writer': ['hot-path/ledger-writer/app.ts'],
    'start:withdrawals': ['indexer/withdrawals/main.ts'],
    'start:supabase-sync': ['scripts/start-supabase-sync.ts'],
    scheduler: ['scripts/reconcile/http.ts'],
  };
  const source = (files[script] ?? []).map(read).join('\n');
  return [...source.matchAll(/(?:app\.get\(|req\.url === )'(\/[a-z/]*)'/g)].map((m) => m[1] as string);
}

function urlOfNodeFetch(command: readonly string[]): URL {
  const script = command.join(' ');
  const url = /fetch\('(http:\/\/[^']+)'\)/.exec(script)?.[1];
  expect(url, script).toBeDefined();
  return new URL(url as string);
}

// ── Dockerfile ──────────────────────────────────────────────────────────────────────────────────

describe('Dockerfile', () => {
  const instructions = dockerfile();
  const runtime = instructions.filter((i) => i.stage === 'runtime');
  const deps = instructions.filter((i) => i.stage === 'deps');

  it('builds on the Node version package.json pins, and installs with npm ci --omit=dev after copying patches/', () => {
    const image = /NODE_IMAGE=(\S+)/.exec(instructions.find((i) => i.op === 'ARG')?.args ?? '')?.[1];
    expect(image).toBe(`node:${packageJson.devDependencies['node']}-bookworm-slim`);
    const ci = deps.findIndex((i) => i.op === 'RUN' && i.args.includes('npm ci --omit=dev'));
    const patches = deps.findIndex((i) => i.op === 'COPY' && i.args.startsWith('patches '));
    expect(ci).toBeGreaterThan(patches);
    expect(patches).toBeGreaterThanOrEqual(0);
    // pkcs11js is a native addon: the deps stage has the build tools, the runtime stage none.
    expect(deps.some((i) => i.op === 'RUN' && /python3 make g\+\+/.test(i.args))).toBe(true);
    expect(runtime.some((i) => i.op === 'RUN' && /apt-get/.test(i.args))).toBe(false);
  });

  it('runs as a non-root user, with an npm script as its command', () => {
    const user = runtime.filter((i) => i.op === 'USER').at(-1)?.args;
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    const cmd = JSON.parse(runtime.find((i) => i.op === 'CMD')?.args ?? '[]') as string[];
    npmScriptOf(cmd);
  });

  it('copies every file a production entry point imports, and .dockerignore excludes none of them', () => {
    const copied = runtime
      .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    const ignored = read('.dockerignore')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('#'));
    const production = /^(start:|db:migrate$|db:partitions$|reconcile$|report$|scheduler$|cache:warm$|ops$)/;
    const entries = Object.entries(packageJson.scripts)
      .filter(([name]) => production.test(name))
      .map(([, command]) => /^tsx (\S+\.ts)$/.exec(command)?.[1] as string);
    expect(entries.length).toBeGreaterThan(10);
    const files = new Set<string>(['drizzle/meta/_journal.json', 'patches/postgres+3.4.9.patch']);
    const queue = [...entries];
    while (queue.length > 0) {
      const file = queue.pop() as string;
      if (files.has(file)) continue;
      files.add(file);
      for (const match of read(file).matchAll(/(?:from\s+|import\(\s*)'(\.[^']+)'/g))
        queue.push(path.relative(ROOT, path.resolve(ROOT, path.dirname(file), match[1] as string)));
    }
    const missing = [...files].filter(
      (file) =>
        !copied.some((source) => file === source || file.startsWith(`${source}/`)) ||
        ignored.some((pattern) => path.matchesGlob(file, pattern) || file.startsWith(`${pattern}/`)),
    );
    expect(missing).toEqual([]);
    // What must never be in the build context.
    for (const secret of ['.env', '.dev', '.git', 'node_modules']) expect(ignored).toContain(secret);
  });
});

// ── Compose ─────────────────────────────────────────────────────────────────────────────────────

describe('deploy/compose.yaml', () => {
  const ours = Object.entries(compose.services).filter(([, s]) => s.image === credanaImage);

  it('runs every Credana service, each by an npm script that exists', () => {
    const scripts = ours.map(([, service]) => npmScriptOf(service.command ?? []));
    for (const script of [
      'start:hot-path',
      'start:ledger-writer',
      'start:indexer',
      'start:settlement',
      'start:liquidator',
      'start:withdrawals',
      'start:supabase-sync',
      'scheduler',
      'db:migrate',
      'db:partitions',
    ])
      expect(scripts).toContain(script);
    expect(compose.services['hot-path']?.deploy?.replicas).toBeGreaterThanOrEqual(2);
    for (const other of ['redis', 'pgbouncer', 'postgres-primary', 'postgres-replica', 'prometheus'])
      expect(Object.keys(compose.services)).toContain(other);
  });

  it('sets only config variables in Credana containers, and no secret as a literal', () => {
    for (const [name, service] of ours) {
      expect(service.env_file, name).toEqual(['credana.env']);
      for (const [variable, value] of Object.entries(service.environment ?? {})) {
        expect(configVariables.has(variable), `${name}: ${variable}`).toBe(true);
        // A secret, or a URL carrying a password, comes from deploy/.env, never written here.
        if (SECRET_VARIABLES.has(variable) || variable.endsWith('_URL') || variable.endsWith('_KEY'))
          expect(value, `${name}: ${variable}`).toMatch(/\$\{[A-Z_]+:\?/);
      }
    }
    for (const variable of Object.keys(sharedEnv)) {
      expect(configVariables.has(variable), variable).toBe(true);
      expect(SECRET_VARIABLES.has(variable), variable).toBe(false);
    }
  });

  it('takes every interpolated variable from deploy/secrets.env.example', () => {
    const interpolated = new Set(
      [...read('deploy/compose.yaml').matchAll(/\$\{([A-Z_]+)/g)].map((m) => m[1] as string),
    );
    expect(interpolated.size).toBeGreaterThan(10);
    expect([...interpolated].filter((name) => !(name in secretsEnv))).toEqual([]);
    // And nothing in that file has a value: it is an example to fill in.
    expect(Object.entries(secretsEnv).filter(([, value]) => value !== '')).toEqual([]);
  });

  it('gives each Credana service a configuration the service accepts in production', () => {
    for (const [name, service] of ours) {
      const env: Record<string, string> = { ...sharedEnv };
      for (const [variable, value] of Object.entries(service.environment ?? {}))
        env[variable] = value.replace(
          /\$\{[^}]+\}/g,
          // An operator's own values (none of them one the repository publishes).
          variable.endsWith('_PRIVATE_KEY') ? `0x${'7e'.repeat(32)}` : 'not-public-deploy-test-value-0001',
        );
      // What the example leaves to deploy/.env, as an operator would fill it in.
      env['STRIPE_WEBHOOK_SECRETS'] ??= 'not-public-deploy-test-value-0002';
      env['SUPABASE_DB_URL'] = 'postgres://sync:pw@supabase.example.invalid:5432/postgres';
      let config: Config | undefined;
      expect(() => {
        config = loadConfig(env);
      }, name).not.toThrow();
      expect(config?.NODE_ENV, name).toBe('production');
    }
  });

  it('probes each service on a port it listens on and a path it serves, and exposes only its ports', () => {
    let probed = 0;
    for (const [name, service] of ours) {
      const script = npmScriptOf(service.command ?? []);
      const ports = listenerPorts[script]?.({ ...sharedEnv, ...service.environment }, service.command ?? []);
      for (const exposed of service.expose ?? [])
        expect(ports, `${name} exposes ${exposed}`).toContain(Number(exposed));
      if (service.healthcheck === undefined) continue;
      const url = urlOfNodeFetch(service.healthcheck.test);
      expect(ports, `${name} healthcheck ${url}`).toContain(Number(url.port));
      expect(routesOf(script), `${name} healthcheck ${url}`).toContain(url.pathname);
      probed++;
    }
    expect(probed).toBe(5);
    // The hot path's healthcheck is its readiness on the internal listener, not mere liveness.
    const hotPath = urlOfNodeFetch(compose.services['hot-path']?.healthcheck?.test ?? []);
    expect([hotPath.port, hotPath.pathname]).toEqual([sharedEnv['HOT_PATH_METRICS_PORT'], '/readyz']);
  });

  it('runs the indexer, the settlement worker and the liquidator once each (they take a per-chain lock)', () => {
    for (const name of ['indexer', 'settlement', 'liquidator'])
      expect(compose.services[name]?.deploy?.replicas ?? 1, name).toBe(1);
  });
});

// ── Kubernetes ──────────────────────────────────────────────────────────────────────────────────

describe('deploy/k8s', () => {
  it('parses, and every container runs an npm script with resources and a read-only root', () => {
    expect(workloads.length).toBeGreaterThanOrEqual(8);
    for (const workload of workloads)
      for (const container of podSpecOf(workload).containers) {
        npmScriptOf(container.command);
        expect(container.resources?.requests?.cpu, workload.metadata.name).toBeDefined();
        expect(container.resources?.limits?.memory, workload.metadata.name).toBeDefined();
        expect(container.securityContext?.readOnlyRootFilesystem, workload.metadata.name).toBe(true);
        expect(podSpecOf(workload).securityContext?.runAsNonRoot, workload.metadata.name).toBe(true);
      }
  });

  it('names only config variables, and takes secrets only from the credana-secrets Secret', () => {
    expect(Object.keys(k8sEnv).filter((variable) => !configVariables.has(variable))).toEqual([]);
    expect(Object.keys(k8sEnv).filter((variable) => SECRET_VARIABLES.has(variable))).toEqual([]);
    expect(k8sObjects.filter((o) => o.kind === 'Secret')).toEqual([]);
    for (const workload of workloads)
      for (const container of podSpecOf(workload).containers)
        for (const env of container.env ?? []) {
          expect(configVariables.has(env.name), env.name).toBe(true);
          // Secrets and database URLs (they carry passwords) only by reference.
          if (SECRET_VARIABLES.has(env.name) || env.name.endsWith('_URL')) {
            expect(env.value, `${workload.metadata.name}: ${env.name}`).toBeUndefined();
            expect(env.valueFrom?.secretKeyRef?.name).toBe('credana-secrets');
          }
        }
  });

  it('wires probes and metrics annotations to ports the service listens on and paths it serves', () => {
    let probes = 0;
    for (const workload of workloads.filter((o) => o.kind === 'Deployment')) {
      const container = podSpecOf(workload).containers[0];
      const script = npmScriptOf(container.command);
      const ports = listenerPorts[script]?.(k8sEnv, container.command) ?? [];
      for (const port of container.ports ?? [])
        expect(ports, workload.metadata.name).toContain(port.containerPort);
      for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        const probe = container[kind];
        if (probe === undefined) continue;
        const url = probe.httpGet
          ? new URL(`http://pod:${probe.httpGet.port}${probe.httpGet.path}`)
          : urlOfNodeFetch(probe.exec.command);
        expect(ports, `${workload.metadata.name} ${kind}`).toContain(Number(url.port));
        expect(routesOf(script), `${workload.metadata.name} ${kind}`).toContain(url.pathname);
        probes++;
      }
      const annotations = workload.spec.template.metadata.annotations ?? {};
      if (annotations['prometheus.io/scrape'] === 'true') {
        expect(ports).toContain(Number(annotations['prometheus.io/port']));
        expect(routesOf(script)).toContain(annotations['prometheus.io/path']);
      }
    }
    expect(probes).toBeGreaterThanOrEqual(8);
    // The hot path's readiness is /readyz on the internal listener (Postgres down does not fail it).
    const hotPath = workloads.find((o) => o.metadata.name === 'credana-hot-path');
    expect(podSpecOf(hotPath).containers[0].readinessProbe.httpGet).toEqual({
      path: '/readyz',
      port: Number(k8sEnv['HOT_PATH_METRICS_PORT']),
    });
  });

  it('autoscales the hot path and keeps enough of it through a node drain', () => {
    const hpa = k8sObjects.find((o) => o.kind === 'HorizontalPodAutoscaler');
    const pdb = k8sObjects.find((o) => o.kind === 'PodDisruptionBudget');
    const deployment = workloads.find((o) => o.metadata.name === 'credana-hot-path');
    expect(hpa.spec.scaleTargetRef).toEqual({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: 'credana-hot-path',
    });
    expect(pdb.spec.selector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    // A PDB as large as the smallest scale would block every drain.
    expect(pdb.spec.minAvailable).toBeLessThan(hpa.spec.minReplicas);
    expect(deployment.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);
    const service = k8sObjects.find((o) => o.kind === 'Service' && o.metadata.name === 'credana-hot-path');
    // Only the webhook port is exposed; the internal listener is not.
    expect(service.spec.ports.map((p: { port: number }) => p.port)).toEqual([
      Number(k8sEnv['HOT_PATH_PORT']),
    ]);
  });

  it('runs one indexer, settlement worker and liquidator, replaced not rolled (their per-chain lock)', () => {
    for (const name of ['credana-indexer', 'credana-settlement', 'credana-liquidator']) {
      const deployment = workloads.find((o) => o.metadata.name === name);
      expect([deployment.spec.replicas, deployment.spec.strategy.type], name).toEqual([1, 'Recreate']);
    }
  });

  it('schedules each reconciliation job on the cron of scripts/reconcile/qstash-schedules.ts', () => {
    const cronJobs = new Map<string, string>(
      workloads
        .filter((o) => o.kind === 'CronJob' && o.metadata.name.startsWith('credana-reconcile-'))
        .map((o) => [podSpecOf(o).containers[0].command.at(-1), o.spec.schedule]),
    );
    const expected = new Map(
      SCHEDULES.filter((spec) => spec.job !== 'stripe').map((spec) => [spec.job as string, spec.cron]),
    );
    expect(cronJobs).toEqual(expected);
  });
});

// ── Prometheus ──────────────────────────────────────────────────────────────────────────────────

describe('deploy/prometheus/prometheus.yml', () => {
  it('passes promtool check config with the repository rules, scraping the ports the services use', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'credana-prom-'));
    try {
      cpSync(path.join(ROOT, 'deploy/prometheus/prometheus.yml'), path.join(dir, 'prometheus.yml'));
      cpSync(path.join(ROOT, 'ops/prometheus/rules.yml'), path.join(dir, 'rules.yml'));
      // Fails (not skips) when promtool is missing: .ci/run installs Debian's prometheus for it.
      const out = execFileSync('promtool', ['check', 'config', path.join(dir, 'prometheus.yml')], {
        encoding: 'utf8',
      });
      expect(out).toContain('SUCCESS');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const prometheus = parseYaml(read('deploy/prometheus/prometheus.yml')) as {
      scrape_configs: { job_name: string; dns_sd_configs: { names: string[]; port: number }[] }[];
    };
    const ports = Object.fromEntries(
      prometheus.scrape_configs.map((c) => [c.job_name, c.dns_sd_configs[0]?.port]),
    );
    expect(ports).toEqual({
      'hot-path': Number(sharedEnv['HOT_PATH_METRICS_PORT']),
      'ledger-writer': Number(sharedEnv['LEDGER_WRITER_PORT']),
    });
    for (const config of prometheus.scrape_configs)
      expect(Object.keys(compose.services)).toContain(config.dns_sd_configs[0]?.names[0]);
  });
});

// ── Real processes ──────────────────────────────────────────────────────────────────────────────

describe('the hot path answers its probe paths', () => {
  let services: TestServices;
  let hotPath: Awaited<ReturnType<typeof createHotPath>> | undefined;
  beforeAll(async () => {
    services = await setUpServices();
  });
  afterAll(async () => {
    await hotPath?.close();
    await services?.close();
  });

  it('GET /healthz and /readyz are 200 on the internal listener and the public port; /metrics only internal', async () => {
    const config = loadConfig({
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: services.databaseUrl,
      REDIS_URL: services.redisUrl,
      REDIS_KEY_PREFIX: services.prefix,
    });
    hotPath = await createHotPath(config);
    const paths = new Set<string>();
    for (const service of Object.values(compose.services))
      if (service.command?.[2] === 'start:hot-path' && service.healthcheck)
        paths.add(urlOfNodeFetch(service.healthcheck.test).pathname);
    const deployment = workloads.find((o) => o.metadata.name === 'credana-hot-path');
    for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe'])
      paths.add(podSpecOf(deployment).containers[0][kind].httpGet.path);
    expect([...paths].sort()).toEqual(['/healthz', '/readyz']);
    for (const probePath of paths) {
      expect((await hotPath.internalApp.request(probePath)).status, probePath).toBe(200);
      expect((await hotPath.app.request(probePath)).status, probePath).toBe(200);
    }
    expect((await hotPath.internalApp.request('/metrics')).status).toBe(200);
    expect((await hotPath.app.request('/metrics')).status).toBe(404);
  });
});

describe('deploy/redis/redis.conf', () => {
  it('is what the hot path and the ledger writer accept in production', async () => {
    // Its directives, less where to listen and store (the test's own).
    const args = read('deploy/redis/redis.conf')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('#'))
      .filter((line) => !/^(bind|dir|protected-mode|save)\s/.test(line))
      .flatMap((line) => {
        const [directive = '', ...value] = line.split(/\s+/);
        return [`--${directive}`, value.join(' ')];
      });
    expect(args).toContain('--appendfsync');
    const server = await startRedisServer(args);
    const redis = createRedis({ url: server.url });
    try {
      const verdict = await checkRedisDurability({
        redis,
        required: (sharedEnv['REDIS_REQUIRED_APPENDFSYNC'] ??
          'always') as Config['REDIS_REQUIRED_APPENDFSYNC'],
        nodeEnv: 'production',
        logger: { warn: () => {} },
      });
      expect({ ok: verdict.ok, refuse: verdict.refuse, line: verdict.line }).toEqual({
        ok: true,
        refuse: false,
        line: null,
      });
    } finally {
      redis.disconnect();
      await server.destroy();
    }
  });
});

describe('deploy/pgbouncer/pgbouncer.ini in front of PostgreSQL, with the services database client', () => {
  let cluster: Awaited<ReturnType<typeof startPostgresCluster>> | undefined;
  let bouncer: ChildProcess | undefined;
  let dir: string;
  let bouncerUrl: (role: string) => string;
  const password = (role: string) => `pw-${role}-deploy-test`;
  const roles = ['hot_path', 'settlement'];

  beforeAll(async () => {
    cluster = await startPostgresCluster();
    const databaseUrl = cluster.url.replace(/\/postgres$/, '/credana');
    await ensureDatabase(databaseUrl);
    await migrateDatabase(databaseUrl);
    // deploy/postgres/service-roles.sql as the operator runs it (every variable it names is given).
    const variables = [...read('deploy/postgres/service-roles.sql').matchAll(/:'([a-z_]+)'/g)].map(
      (m) => m[1],
    );
    const psqlArgs = [...new Set(variables)].flatMap((name) => [
      '-v',
      name === 'statement_timeout_ms'
        ? 'statement_timeout_ms=4321'
        : `${name}=${password(name?.replace(/_password$/, '') ?? '')}`,
    ]);
    execFileSync(
      'psql',
      [
        databaseUrl,
        '-v',
        'ON_ERROR_STOP=1',
        ...psqlArgs,
        '-f',
        path.join(ROOT, 'deploy/postgres/service-roles.sql'),
      ],
      {
        stdio: 'pipe',
      },
    );
    // The repository's pgbouncer.ini, with only where it listens, where the server is and the user list
    // rewritten for this machine.
    dir = mkdtempSync(path.join(tmpdir(), 'credana-pgbouncer-'));
    const port = await freePort();
    const ini = read('deploy/pgbouncer/pgbouncer.ini')
      .replace(/^credana = host=\S+ port=\d+/m, `credana = host=127.0.0.1 port=${cluster.port}`)
      .replace(/^listen_addr = .*$/m, 'listen_addr = 127.0.0.1')
      .replace(/^listen_port = .*$/m, `listen_port = ${port}\nunix_socket_dir =`)
      .replace(/^auth_file = .*$/m, `auth_file = ${path.join(dir, 'userlist.txt')}`);
    expect(ini).toContain(`port=${cluster.port}`);
    writeFileSync(path.join(dir, 'pgbouncer.ini'), ini);
    writeFileSync(
      path.join(dir, 'userlist.txt'),
      roles.map((role) => `"credana_${role}" "${password(role)}"\n`).join(''),
    );
    chmodSync(dir, 0o755);
    // PgBouncer refuses to run as root: as the postgres OS user then, as the private cluster does.
    const asPostgres = process.getuid?.() === 0;
    const uid = asPostgres ? Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })) : undefined;
    bouncer = spawn('pgbouncer', [path.join(dir, 'pgbouncer.ini')], {
      stdio: 'ignore',
      ...(uid === undefined ? {} : { uid }),
    });
    bouncerUrl = (role) => `postgres://credana_${role}:${password(role)}@127.0.0.1:${port}/credana`;
    const until = Date.now() + 10_000;
    for (;;) {
      const probe = createDatabase({ url: bouncerUrl('hot_path'), poolMax: 1, connectTimeoutS: 1 });
      const up = await probe.sql`select 1`.then(
        () => true,
        () => false,
      );
      await probe.close();
      if (up) break;
      if (Date.now() > until || bouncer.exitCode !== null) throw new Error('pgbouncer did not answer');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }, 120_000);

  afterAll(async () => {
    if (bouncer !== undefined && bouncer.exitCode === null) {
      const exited = new Promise((resolve) => bouncer?.once('exit', resolve));
      bouncer.kill('SIGTERM');
      await exited;
    }
    cluster?.destroy();
    if (dir !== undefined && statSync(dir, { throwIfNoEntry: false }) !== undefined)
      rmSync(dir, { recursive: true, force: true });
  });

  it('accepts the services connections, with the role statement_timeout also on a reused server connection', async () => {
    // createDatabase sends statement_timeout at connect, which PgBouncer refuses unless the ini says to
    // ignore it; ignored, the role's setting from service-roles.sql must be what applies.
    for (let round = 0; round < 2; round++) {
      const database = createDatabase({ url: bouncerUrl('hot_path'), poolMax: 1, statementTimeoutMs: 9_999 });
      const [row] = await database.sql<{ statement_timeout: string }[]>`show statement_timeout`;
      await database.close();
      expect(row?.statement_timeout, `client ${round + 1}`).toBe('4321ms');
    }
  });

  it('keeps the per-chain session lock exclusive across clients, and frees it when its holder goes', async () => {
    const first = createDatabase({ url: bouncerUrl('settlement'), poolMax: 2 });
    const second = createDatabase({ url: bouncerUrl('settlement'), poolMax: 2 });
    try {
      const release = await tryExclusive(first.sql, 4242, 1);
      expect(release).not.toBeNull();
      // In transaction pooling the lock's server connection would be handed to the second client, which
      // would then "hold" it too: two settlement workers.
      expect(await tryExclusive(second.sql, 4242, 1)).toBeNull();
      // The holder dies without unlocking: PgBouncer's DISCARD ALL must free it for the next one.
      await first.sql.end({ timeout: 0 });
      let again: (() => Promise<void>) | null = null;
      for (let attempt = 0; attempt < 50 && again === null; attempt++) {
        again = await tryExclusive(second.sql, 4242, 1);
        if (again === null) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(again).not.toBeNull();
      await again?.();
    } finally {
      await first.close().catch(() => {});
      await second.close();
    }
  });
});

describe('SIGTERM through `npm run`, as the container gets it', () => {
  let services: TestServices;
  let child: ChildProcess | undefined;
  beforeAll(async () => {
    services = await setUpServices();
  });
  afterAll(async () => {
    // Only if the test failed: whatever is left of the group it started.
    if (child?.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // the group is gone
      }
    }
    await services?.close();
  });

  it("with the image's script shell, stops the service itself, not only npm", async () => {
    const shell = dockerfile()
      .filter((i) => i.stage === 'runtime' && i.op === 'ENV')
      .map((i) => /npm_config_script_shell=(\S+)/.exec(i.args)?.[1])
      .find((value) => value !== undefined);
    expect(shell).toBe('/bin/bash');
    const started = spawn('npm', ['run', 'start:hot-path'], {
      cwd: ROOT,
      detached: true,
      env: {
        PATH: process.env['PATH'] ?? '',
        HOME: process.env['HOME'] ?? ROOT,
        npm_config_script_shell: shell as string,
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        DATABASE_URL: services.databaseUrl,
        REDIS_URL: services.redisUrl,
        REDIS_KEY_PREFIX: services.prefix,
        HOT_PATH_PORT: '0',
        HOT_PATH_METRICS_PORT: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = started;
    let output = '';
    started.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    started.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const until = Date.now() + 60_000;
    while (!output.includes('hot-path ready on ')) {
      if (started.exitCode !== null) throw new Error(`start:hot-path exited early: ${output}`);
      if (Date.now() > until) throw new Error(`start:hot-path not ready in time: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // SIGTERM to npm alone, as `docker stop` or the kubelet sends it to the container's first process.
    started.kill('SIGTERM');
    const groupGoneBy = Date.now() + 15_000;
    let alive = true;
    while (alive && Date.now() < groupGoneBy) {
      try {
        process.kill(-(started.pid as number), 0);
        await new Promise((resolve) => setTimeout(resolve, 100));
      } catch {
        alive = false;
      }
    }
    // With Debian's sh, npm's child would have been the shell: npm gone, the hot path still running.
    expect(alive, 'a process of `npm run start:hot-path` outlived SIGTERM').toBe(false);
    child = undefined;
  }, 90_000);
});
