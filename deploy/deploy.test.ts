// Proves the deploy files (Dockerfile, .dockerignore, deploy/compose.yaml, deploy/k8s/*, PgBouncer, Redis and Prometheus configs) refer only to what exists — npm scripts, config variables, ports, probe paths, pooling routes, HSM key labels and PIN files, schedules — by parsing each and checking it against the repository and `loadConfig` in production, and, where this machine can run the part, runs it: the hot path's probe paths by real requests, PgBouncer with deploy/pgbouncer/pgbouncer.ini in front of a private PostgreSQL (a transaction-pooled hot path and ledger writer deciding, writing and falling back; a session lock on the session pool), Redis with deploy/redis/redis.conf through the services' durability check, promtool on the Prometheus config, and SIGTERM through `npm run` with the image's shell setting. Docker and Kubernetes themselves cannot run here.
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
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { createHotPath } from '../hot-path/server.ts';
import { createLedgerWriterMetrics } from '../ledger-writer/metrics.ts';
import { waitForEmptyOutbox } from '../ledger-writer/testing.ts';
import { createLedgerWriter } from '../ledger-writer/writer.ts';
import { SCHEDULES } from '../reconciler/qstash-schedules.ts';
import {
  CHAIN_SIGNERS,
  CONFIG_VARIABLES,
  type Config,
  loadConfig,
  SECRET_VARIABLES,
} from '../shared/config.ts';
import { createDatabase, parseDatabaseUrl } from '../shared/db/client.ts';
import { tryExclusive } from '../shared/db/locks.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { createRedis } from '../shared/redis/client.ts';
import { checkRedisDurability } from '../shared/redis/durability.ts';
import { redisEnv, setUpServices, type TestServices } from '../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import { post, testConfig, WETH_PRICE_E8 } from '../test/support/hot-path.ts';
import { freePort, startPostgresCluster, startRedisServer } from '../test/support/processes.ts';
import { authorizationRequest } from '../test/support/stripe.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const packageJson = JSON.parse(read('package.json')) as {
  scripts: Record<string, string>;
  devDependencies: Record<string, string>;
};
/** What a deployment may set: the schema's variables, and `<SECRET>_FILE` for each secret. */
const configVariables = new Set([
  ...CONFIG_VARIABLES,
  ...[...SECRET_VARIABLES].map((name) => `${name}_FILE`),
]);
const rawChainKeys = Object.values(CHAIN_SIGNERS).map((signer) => signer.privateKey as string);

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
      secrets?: string[];
      volumes?: string[];
    }
  >;
  secrets?: Record<string, { file: string }>;
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

/** The routes of the internal listener every service shares (shared/observability/internal-app.ts). */
const INTERNAL_APP = 'shared/observability/internal-app.ts';

interface Listener {
  port: number;
  /** Files whose `app.get('/…')` / `req.url === '/…'` routes this listener serves. */
  files: string[];
}

/** The `--flag N` value of a command, or NaN. */
const flagOf = (command: readonly string[], flag: string) =>
  command.includes(flag) ? Number(command[command.indexOf(flag) + 1]) : Number.NaN;

/**
 * Each service's HTTP listeners, by npm script: the port variable (or flag) it reads and the source of
 * its routes. A probe or scrape on another port, or a path not served there, would hit nothing.
 */
const listenersOf: Record<string, (env: Record<string, string>, command: string[]) => Listener[]> = {
  'start:hot-path': (env) => [
    { port: Number(env['HOT_PATH_PORT']), files: ['hot-path/app.ts'] },
    { port: Number(env['HOT_PATH_METRICS_PORT']), files: ['hot-path/ops/internal-app.ts', INTERNAL_APP] },
  ],
  // QUEUE_DRIVER=redis: LEDGER_WRITER_PORT is internal and serves everything itself.
  'start:ledger-writer': (env) => [
    { port: Number(env['LEDGER_WRITER_PORT']), files: ['ledger-writer/app.ts'] },
  ],
  'start:withdrawals': (env) => [
    { port: Number(env['WITHDRAWALS_PORT']), files: ['withdrawals/main.ts'] },
    { port: Number(env['WITHDRAWALS_METRICS_PORT']), files: [INTERNAL_APP] },
  ],
  'start:supabase-sync': (env) => [
    { port: Number(env['SUPABASE_SYNC_METRICS_PORT']), files: [INTERNAL_APP] },
  ],
  'start:settlement': (env) => [{ port: Number(env['SETTLEMENT_METRICS_PORT']), files: [INTERNAL_APP] }],
  'start:liquidator': (env) => [{ port: Number(env['LIQUIDATOR_METRICS_PORT']), files: [INTERNAL_APP] }],
  'start:anchorer': (env) => [{ port: Number(env['AUDIT_ANCHOR_METRICS_PORT']), files: [INTERNAL_APP] }],
  'start:indexer': (_env, command) => [{ port: flagOf(command, '--metrics-port'), files: [INTERNAL_APP] }],
  scheduler: (_env, command) => [{ port: flagOf(command, '--port'), files: ['reconciler/http.ts'] }],
};

function routesIn(files: readonly string[]): string[] {
  const source = files.map(read).join('\n');
  return [...source.matchAll(/(?:app\.get\(|req\.url === )'(\/[a-z/]*)'/g)].map((m) => m[1] as string);
}

/** Fails unless `script`'s listener on `port` serves `pathname`. */
function expectServed(
  script: string,
  env: Record<string, string>,
  command: string[],
  port: number,
  pathname: string,
  what: string,
): void {
  const listeners = listenersOf[script]?.(env, command) ?? [];
  const listener = listeners.find((l) => l.port === port);
  expect(
    listener,
    `${what}: ${script} listens on ${listeners.map((l) => l.port).join(', ')}, not ${port}`,
  ).toBeDefined();
  expect(routesIn(listener?.files ?? []), `${what}: ${pathname} on ${port}`).toContain(pathname);
}

/** The [databases] section of deploy/pgbouncer/pgbouncer.ini: alias → its key=value settings. */
function pgBouncerDatabases(ini: string): Map<string, Record<string, string>> {
  const section = /\[databases\]([\s\S]*?)\n\[/.exec(ini)?.[1] ?? '';
  const aliases = new Map<string, Record<string, string>>();
  for (const line of section.split('\n')) {
    const match = /^([a-z_]+)\s*=\s*(.+)$/.exec(line.trim());
    if (match === null) continue;
    aliases.set(
      match[1] as string,
      Object.fromEntries(
        (match[2] as string).split(/\s+/).map((pair) => pair.split('=') as [string, string]),
      ),
    );
  }
  return aliases;
}
const bouncerAliases = pgBouncerDatabases(read('deploy/pgbouncer/pgbouncer.ini'));

/**
 * Where each service's DATABASE_URL must lead (docs/ledger.md, "Connection pooling"): a transaction
 * pool for those that keep nothing between transactions; a session pool for those that hold a session
 * advisory lock per chain (tryExclusiveSession) and for withdrawals; the primary for jobs.
 */
const DATABASE_ROUTES: Record<string, 'transaction' | 'session' | 'primary'> = {
  'start:hot-path': 'transaction',
  'start:ledger-writer': 'transaction',
  'start:supabase-sync': 'transaction',
  'start:indexer': 'session',
  'start:settlement': 'session',
  'start:liquidator': 'session',
  'start:anchorer': 'session',
  'start:withdrawals': 'session',
  scheduler: 'primary',
  'db:migrate': 'primary',
  'db:partitions': 'primary',
};

/** A value an operator would put where a secret goes (none of them one the repository publishes). */
function operatorValue(variable: string): string {
  if (variable === 'STRIPE_SECRET_KEY') return `rk_live_${'n0tpublic'.repeat(3)}`;
  if (variable.endsWith('_URL')) return 'postgres://someone:not-public@db.example.invalid:5432/credana';
  return 'not-public-deploy-test-value-0001';
}

/** A secret file as a mounted secret holds it: the service user's only (0600). */
const secretFileDir = mkdtempSync(path.join(tmpdir(), 'credana-deploy-secrets-'));
afterAll(() => rmSync(secretFileDir, { recursive: true, force: true }));
function operatorSecretFile(variable: string): string {
  const file = path.join(secretFileDir, variable);
  writeFileSync(file, 'not-public-pin-0001\n', { mode: 0o600 });
  return file;
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
  /** A service's environment as the container gets it, with the operator's values filled in. */
  function containerEnv(name: string, service: (typeof ours)[number][1]): Record<string, string> {
    const env: Record<string, string> = { ...sharedEnv };
    for (const [variable, value] of Object.entries(service.environment ?? {})) {
      if (variable.endsWith('_FILE')) {
        // A Compose secret, mounted at /run/secrets/<name>: declared for the service and at the top.
        const secret = /^\/run\/secrets\/([a-z0-9-]+)$/.exec(value)?.[1];
        expect(secret, `${name}: ${variable}`).toBeDefined();
        expect(service.secrets ?? [], `${name}: ${variable}`).toContain(secret);
        expect(compose.secrets?.[secret as string]?.file, `${name}: ${variable}`).toMatch(/^\.\/secrets\//);
        env[variable] = operatorSecretFile(variable);
      } else
        env[variable] = /^\$\{[^}]+\}$/.test(value)
          ? operatorValue(variable)
          : // A password inside a URL.
            value.replace(/\$\{[^}]+\}/g, 'not-public-password');
    }
    return env;
  }

  it('runs every Credana service, each by an npm script that exists', () => {
    const scripts = ours.map(([, service]) => npmScriptOf(service.command ?? []));
    for (const script of [
      'start:hot-path',
      'start:ledger-writer',
      'start:indexer',
      'start:settlement',
      'start:liquidator',
      'start:anchorer',
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
      const env = containerEnv(name, service);
      let config: Config | undefined;
      expect(() => {
        config = loadConfig(env);
      }, name).not.toThrow();
      expect(config?.NODE_ENV, name).toBe('production');
    }
  });

  it('signs with HSM keys only: a label, the token PIN as a secret file and the PKCS#11 library per signer', () => {
    // Production refuses a raw chain key (exit 78): none may be set, interpolated or listed anywhere.
    const files = ['deploy/compose.yaml', 'deploy/credana.env.example', 'deploy/secrets.env.example'];
    for (const file of files)
      for (const key of rawChainKeys)
        expect(read(file).includes(`${key}=`) || read(file).includes(`${key}:`), `${file}: ${key}`).toBe(
          false,
        );
    const signers: Record<string, string> = {
      'start:settlement': 'SETTLER_KEY_LABEL',
      'start:liquidator': 'LIQUIDATOR_KEY_LABEL',
      'start:withdrawals': 'WITHDRAWAL_SIGNER_KEY_LABEL',
      'start:anchorer': 'AUDIT_ANCHOR_KEY_LABEL',
    };
    const module = sharedEnv['PKCS11_MODULE'] ?? '';
    expect(sharedEnv['PKCS11_TOKEN_LABEL']).toBeDefined();
    for (const [name, service] of ours) {
      const label = signers[npmScriptOf(service.command ?? [])];
      if (label === undefined) continue;
      const config = loadConfig(containerEnv(name, service));
      expect([config[label as keyof Config], config.PKCS11_PIN], name).toEqual([
        service.environment?.[label],
        'not-public-pin-0001',
      ]);
      // The library is inside a read-only mount of the vendor's folder.
      const mount = (service.volumes ?? [])
        .map((v) => v.split(':'))
        .find(([, target]) => module.startsWith(`${target}/`));
      expect(mount?.[2], `${name}: PKCS#11 library mount`).toBe('ro');
      delete signers[npmScriptOf(service.command ?? [])];
    }
    expect(signers).toEqual({});
  });

  it('routes each service to the pool it needs: transaction, session (its lock), or the primary', () => {
    const routed = new Set<string>();
    for (const [name, service] of ours) {
      const script = npmScriptOf(service.command ?? []);
      const route = DATABASE_ROUTES[script];
      expect(route, `${name}: no route for ${script}`).toBeDefined();
      const given = service.environment?.['DATABASE_URL'] ?? '';
      const { url, transactionPooled } = parseDatabaseUrl(given.replace(/\$\{[^}]+\}/g, 'pw'));
      const target = new URL(url);
      if (route === 'primary') {
        expect([target.hostname, target.pathname], name).toEqual(['postgres-primary', '/credana']);
      } else {
        expect(target.hostname, name).toBe('pgbouncer');
        const alias = bouncerAliases.get(target.pathname.slice(1));
        // The alias's own pool mode, and the URL telling the client the same (no prepared statements).
        expect([alias?.['pool_mode'], transactionPooled], name).toEqual([route, route === 'transaction']);
        expect([alias?.['host'], alias?.['dbname']], name).toEqual(['postgres-primary', 'credana']);
      }
      routed.add(script);
    }
    expect([...routed].sort()).toEqual(Object.keys(DATABASE_ROUTES).sort());
    // The scheduler's analytics job reads the streaming replica.
    const replica = new URL(
      (compose.services['scheduler']?.environment?.['READ_REPLICA_URL'] ?? '').replace(/\$\{[^}]+\}/g, 'pw'),
    );
    expect([replica.hostname, replica.pathname]).toEqual(['postgres-replica', '/credana']);
  });

  it('probes each service on a port it listens on and a path it serves, and exposes only its ports', () => {
    let probed = 0;
    for (const [name, service] of ours) {
      const script = npmScriptOf(service.command ?? []);
      const env = { ...sharedEnv, ...service.environment };
      const ports = (listenersOf[script]?.(env, service.command ?? []) ?? []).map((l) => l.port);
      for (const exposed of service.expose ?? [])
        expect(ports, `${name} exposes ${exposed}`).toContain(Number(exposed));
      if (service.healthcheck === undefined) continue;
      const url = urlOfNodeFetch(service.healthcheck.test);
      expectServed(script, env, service.command ?? [], Number(url.port), url.pathname, `${name} healthcheck`);
      probed++;
    }
    // Every long-running service has one.
    expect(probed).toBe(9);
    // The hot path's healthcheck is its readiness on the internal listener, not mere liveness.
    const hotPath = urlOfNodeFetch(compose.services['hot-path']?.healthcheck?.test ?? []);
    expect([hotPath.port, hotPath.pathname]).toEqual([sharedEnv['HOT_PATH_METRICS_PORT'], '/readyz']);
  });

  it('runs the indexer, the settlement worker, the liquidator and the anchorer once each (a per-chain lock)', () => {
    for (const name of ['indexer', 'settlement', 'liquidator', 'anchorer']) {
      expect(compose.services[name], name).toBeDefined();
      expect(compose.services[name]?.deploy?.replicas ?? 1, name).toBe(1);
    }
  });
});

// ── Kubernetes ──────────────────────────────────────────────────────────────────────────────────

describe('deploy/k8s', () => {
  /** The container's environment as the pod gets it, with the operator's secrets filled in. */
  function podEnv(workload: K8sObject, container: K8sObject): Record<string, string> {
    const spec = podSpecOf(workload);
    const env: Record<string, string> = { ...k8sEnv };
    for (const entry of container.env ?? []) {
      if (entry.valueFrom !== undefined) env[entry.name] = operatorValue(entry.name);
      else if (entry.name.endsWith('_FILE')) {
        // A file of a Secret volume: mounted, and readable by the service user and no one else.
        const mount = (container.volumeMounts ?? []).find((m: K8sObject) =>
          entry.value.startsWith(`${m.mountPath}/`),
        );
        const volume = spec.volumes.find((v: K8sObject) => v.name === mount?.name);
        const item = volume?.secret?.items?.find(
          (i: K8sObject) => `${mount.mountPath}/${i.path}` === entry.value,
        );
        const where = `${workload.metadata.name}: ${entry.name}`;
        expect(volume?.secret?.secretName, where).toBe('credana-secrets');
        expect(item, where).toBeDefined();
        const mode = item.mode ?? volume.secret.defaultMode;
        expect(typeof mode, `${where}: defaultMode (the default 0644 is refused)`).toBe('number');
        expect(mode & 0o004, `${where}: world-readable mode ${mode.toString(8)}`).toBe(0);
        // Owned by root: the service user (not root) reads it through the group, the pod's fsGroup.
        expect(mode & 0o040, where).toBe(0o040);
        expect(spec.securityContext?.fsGroup, where).toBe(spec.securityContext?.runAsGroup);
        env[entry.name] = operatorSecretFile(entry.name);
      } else env[entry.name] = entry.value;
    }
    return env;
  }

  it('parses, and every container runs an npm script with resources and a read-only root', () => {
    expect(workloads.length).toBeGreaterThanOrEqual(8);
    for (const workload of workloads) {
      for (const container of podSpecOf(workload).containers) npmScriptOf(container.command);
      for (const container of [
        ...podSpecOf(workload).containers,
        ...(podSpecOf(workload).initContainers ?? []),
      ]) {
        expect(container.resources?.requests?.cpu, workload.metadata.name).toBeDefined();
        expect(container.resources?.limits?.memory, workload.metadata.name).toBeDefined();
        expect(container.securityContext?.readOnlyRootFilesystem, workload.metadata.name).toBe(true);
        expect(podSpecOf(workload).securityContext?.runAsNonRoot, workload.metadata.name).toBe(true);
      }
    }
  });

  it('names only config variables, and takes secrets only from the credana-secrets Secret', () => {
    expect(Object.keys(k8sEnv).filter((variable) => !configVariables.has(variable))).toEqual([]);
    expect(Object.keys(k8sEnv).filter((variable) => SECRET_VARIABLES.has(variable))).toEqual([]);
    expect(k8sObjects.filter((o) => o.kind === 'Secret')).toEqual([]);
    const keys = new Set<string>();
    for (const workload of workloads)
      for (const container of podSpecOf(workload).containers)
        for (const env of container.env ?? []) {
          expect(configVariables.has(env.name), env.name).toBe(true);
          // Secrets and database URLs (they carry passwords) only by reference.
          if (SECRET_VARIABLES.has(env.name) || env.name.endsWith('_URL')) {
            expect(env.value, `${workload.metadata.name}: ${env.name}`).toBeUndefined();
            expect(env.valueFrom?.secretKeyRef?.name).toBe('credana-secrets');
          }
          if (env.valueFrom?.secretKeyRef !== undefined) keys.add(env.valueFrom.secretKeyRef.key);
        }
    for (const workload of workloads)
      for (const volume of podSpecOf(workload).volumes ?? [])
        for (const item of volume.secret?.items ?? []) keys.add(item.key);
    // The README lists every key of the Secret an operator must create.
    const deployment = /## Deployment([\s\S]*?)\n## /.exec(read('README.md'))?.[1] ?? '';
    expect([...keys].filter((key) => !deployment.includes(`\`${key}\``))).toEqual([]);
  });

  it('gives each container a configuration it accepts in production, with HSM keys only', () => {
    const signers: Record<string, string> = {
      'start:settlement': 'SETTLER_KEY_LABEL',
      'start:liquidator': 'LIQUIDATOR_KEY_LABEL',
      'start:withdrawals': 'WITHDRAWAL_SIGNER_KEY_LABEL',
      'start:anchorer': 'AUDIT_ANCHOR_KEY_LABEL',
    };
    for (const workload of workloads)
      for (const container of podSpecOf(workload).containers) {
        const env = podEnv(workload, container);
        for (const key of rawChainKeys) expect(env[key], workload.metadata.name).toBeUndefined();
        let config: Config | undefined;
        expect(() => {
          config = loadConfig(env);
        }, workload.metadata.name).not.toThrow();
        expect(config?.NODE_ENV, workload.metadata.name).toBe('production');
        const script = npmScriptOf(container.command);
        const label = signers[script];
        if (label === undefined) continue;
        expect(config?.[label as keyof Config], workload.metadata.name).toBeDefined();
        expect(config?.PKCS11_PIN, workload.metadata.name).toBe('not-public-pin-0001');
        // The library comes from the init container's copy, mounted read-only where PKCS11_MODULE points.
        const mount = container.volumeMounts.find((m: K8sObject) =>
          (config?.PKCS11_MODULE ?? '').startsWith(`${m.mountPath}/`),
        );
        expect(mount?.readOnly, `${workload.metadata.name}: PKCS#11 library mount`).toBe(true);
        const copier = (podSpecOf(workload).initContainers ?? []).find((c: K8sObject) =>
          c.volumeMounts.some((m: K8sObject) => m.name === mount.name && m.mountPath === mount.mountPath),
        );
        expect(copier, `${workload.metadata.name}: the library's init container`).toBeDefined();
        delete signers[script];
      }
    expect(signers).toEqual({});
  });

  it('wires probes and metrics annotations to ports the service listens on and paths it serves', () => {
    let probes = 0;
    let scraped = 0;
    for (const workload of workloads.filter((o) => o.kind === 'Deployment')) {
      const container = podSpecOf(workload).containers[0];
      const script = npmScriptOf(container.command);
      const ports = (listenersOf[script]?.(k8sEnv, container.command) ?? []).map((l) => l.port);
      for (const port of container.ports ?? [])
        expect(ports, workload.metadata.name).toContain(port.containerPort);
      for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        const probe = container[kind];
        if (probe === undefined) continue;
        const url = probe.httpGet
          ? new URL(`http://pod:${probe.httpGet.port}${probe.httpGet.path}`)
          : urlOfNodeFetch(probe.exec.command);
        expectServed(
          script,
          k8sEnv,
          container.command,
          Number(url.port),
          url.pathname,
          `${workload.metadata.name} ${kind}`,
        );
        probes++;
      }
      const annotations = workload.spec.template.metadata.annotations ?? {};
      if (annotations['prometheus.io/scrape'] === 'true') {
        const port = Number(annotations['prometheus.io/port']);
        expectServed(
          script,
          k8sEnv,
          container.command,
          port,
          annotations['prometheus.io/path'],
          workload.metadata.name,
        );
        scraped++;
      }
    }
    expect(probes).toBe(22);
    // Every Deployment is scraped, on a listener bound to the pod.
    expect(scraped).toBe(8);
    expect(k8sEnv['METRICS_HOST']).toBe('0.0.0.0');
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

  it('runs one indexer, settlement worker, liquidator and anchorer, replaced not rolled (their per-chain lock)', () => {
    for (const name of ['credana-indexer', 'credana-settlement', 'credana-liquidator', 'credana-anchorer']) {
      const deployment = workloads.find((o) => o.metadata.name === name);
      expect([deployment?.spec.replicas, deployment?.spec.strategy.type], name).toEqual([1, 'Recreate']);
    }
  });

  it('schedules every job of reconciler/qstash-schedules.ts as a CronJob on its cron', () => {
    const cronJobs = workloads.filter((o) => o.kind === 'CronJob');
    const scheduled = new Map<string, string>(
      cronJobs.map((o) => [podSpecOf(o).containers[0].command.slice(2).join(' '), o.spec.schedule]),
    );
    const expected = new Map(SCHEDULES.map((spec) => [`reconcile -- ${spec.job}`, spec.cron]));
    expect(scheduled).toEqual(expected);
    // What a job reads comes from its config: the Stripe API key, the replica.
    const envOf = (job: string) =>
      podSpecOf(cronJobs.find((o) => o.metadata.name === `credana-reconcile-${job}`)).containers[0].env.map(
        (e: K8sObject) => e.name,
      );
    expect(envOf('stripe')).toContain('STRIPE_SECRET_KEY');
    expect(envOf('analytics')).toContain('READ_REPLICA_URL');
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
      indexer: flagOf(compose.services['indexer']?.command ?? [], '--metrics-port'),
      settlement: Number(sharedEnv['SETTLEMENT_METRICS_PORT']),
      liquidator: Number(sharedEnv['LIQUIDATOR_METRICS_PORT']),
      anchorer: Number(sharedEnv['AUDIT_ANCHOR_METRICS_PORT']),
      withdrawals: Number(sharedEnv['WITHDRAWALS_METRICS_PORT']),
      'supabase-sync': Number(sharedEnv['SUPABASE_SYNC_METRICS_PORT']),
    });
    // Each scrape target is a service that serves /metrics on that port, bound where Prometheus reaches.
    expect(sharedEnv['METRICS_HOST']).toBe('0.0.0.0');
    for (const config of prometheus.scrape_configs) {
      const name = config.dns_sd_configs[0]?.names[0] ?? '';
      const service = compose.services[name];
      expect(service, name).toBeDefined();
      const script = npmScriptOf(service?.command ?? []);
      const env = { ...sharedEnv, ...service?.environment };
      expectServed(script, env, service?.command ?? [], Number(ports[config.job_name]), '/metrics', name);
    }
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
      ...redisEnv(services),
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
  let port: number;
  let databaseUrl: string;
  const password = (role: string) => `pw-${role}-deploy-test`;
  const roles = ['hot_path', 'ledger_writer', 'settlement', 'reconciliation'];
  /** A URL through PgBouncer to one of its databases, as a service role. */
  const bouncerUrl = (role: string, database: 'credana' | 'credana_session') =>
    `postgres://credana_${role}:${password(role)}@127.0.0.1:${port}/${database}` +
    (bouncerAliases.get(database)?.['pool_mode'] === 'transaction' ? '?pgbouncer=transaction' : '');
  /** PgBouncer's admin console (SHOW …), as the test's own admin user. */
  async function show(what: string): Promise<Record<string, unknown>[]> {
    const admin = postgres(`postgres://deploy_test_admin:${password('admin')}@127.0.0.1:${port}/pgbouncer`, {
      max: 1,
      fetch_types: false,
      onnotice: () => {},
    });
    try {
      return [...(await admin.unsafe(`show ${what}`).simple())] as Record<string, unknown>[];
    } finally {
      await admin.end();
    }
  }
  /** deploy/postgres/service-roles.sql as the operator runs it, with `extra` psql variables. */
  function runServiceRoles(extra: string[] = []): void {
    const variables = [...read('deploy/postgres/service-roles.sql').matchAll(/:'([a-z_]+_password)'/g)].map(
      (m) => m[1] as string,
    );
    const psqlArgs = [...new Set(variables)].flatMap((name) => [
      '-v',
      `${name}=${password(name.replace(/_password$/, ''))}`,
    ]);
    execFileSync(
      'psql',
      [
        databaseUrl,
        '-v',
        'ON_ERROR_STOP=1',
        ...psqlArgs,
        ...extra,
        '-f',
        path.join(ROOT, 'deploy/postgres/service-roles.sql'),
      ],
      { stdio: 'pipe' },
    );
  }

  beforeAll(async () => {
    cluster = await startPostgresCluster();
    databaseUrl = cluster.url.replace(/\/postgres$/, '/credana');
    await ensureDatabase(databaseUrl);
    await migrateDatabase(databaseUrl);
    // Passwords only: the statement timeouts are migration 0009's.
    runServiceRoles();
    // The repository's pgbouncer.ini, with only where it listens, where the server is and the user list
    // rewritten for this machine, and an admin user for this test's SHOW commands.
    dir = mkdtempSync(path.join(tmpdir(), 'credana-pgbouncer-'));
    port = await freePort();
    const ini = read('deploy/pgbouncer/pgbouncer.ini')
      .replace(/host=postgres-primary port=5432/g, `host=127.0.0.1 port=${cluster.port}`)
      .replace(/^listen_addr = .*$/m, 'listen_addr = 127.0.0.1')
      .replace(
        /^listen_port = .*$/m,
        `listen_port = ${port}\nunix_socket_dir =\nadmin_users = deploy_test_admin`,
      )
      .replace(/^auth_file = .*$/m, `auth_file = ${path.join(dir, 'userlist.txt')}`);
    expect(ini.match(new RegExp(`port=${cluster.port}`, 'g'))).toHaveLength(2);
    writeFileSync(path.join(dir, 'pgbouncer.ini'), ini);
    writeFileSync(
      path.join(dir, 'userlist.txt'),
      [
        ...roles.map((role) => `"credana_${role}" "${password(role)}"\n`),
        `"deploy_test_admin" "${password('admin')}"\n`,
      ].join(''),
    );
    chmodSync(dir, 0o755);
    // PgBouncer refuses to run as root: as the postgres OS user then, as the private cluster does.
    const asPostgres = process.getuid?.() === 0;
    const uid = asPostgres ? Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })) : undefined;
    bouncer = spawn('pgbouncer', [path.join(dir, 'pgbouncer.ini')], {
      stdio: 'ignore',
      ...(uid === undefined ? {} : { uid }),
    });
    const until = Date.now() + 10_000;
    for (;;) {
      const probe = createDatabase({
        url: bouncerUrl('hot_path', 'credana'),
        poolMax: 1,
        connectTimeoutS: 1,
      });
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

  it('defines a transaction pool and a session pool on the same primary database', async () => {
    const databases = new Map((await show('databases')).map((row) => [row['name'], row]));
    for (const [alias, mode] of [
      ['credana', 'transaction'],
      ['credana_session', 'session'],
    ] as const) {
      const row = databases.get(alias);
      expect([row?.['database'], row?.['port'], row?.['pool_mode']], alias).toEqual([
        'credana',
        cluster?.port,
        mode,
      ]);
    }
  });

  it("applies each role's own statement_timeout (drizzle/0009) through both pools, also on a reused server connection", async () => {
    // createDatabase asks for 9 999 ms at connect: the transaction-pooled client does not send it, the
    // session-pooled one sends it and PgBouncer drops it (ignore_startup_parameters). The role's 5 s is
    // what bounds a statement.
    for (const database of ['credana', 'credana_session'] as const)
      for (let round = 0; round < 2; round++) {
        const client = createDatabase({
          url: bouncerUrl('hot_path', database),
          poolMax: 1,
          statementTimeoutMs: 9_999,
        });
        const [row] = await client.sql<{ statement_timeout: string }[]>`show statement_timeout`;
        await client.close();
        expect(row?.statement_timeout, `${database}, client ${round + 1}`).toBe('5s');
      }
  });

  it('serves a transaction-pooled hot path and ledger writer: decisions, the writer, the Postgres fallback', async () => {
    const owner = createDatabase({ url: databaseUrl, poolMax: 2 });
    const redisServer = await startRedisServer();
    const redis = createRedis({ url: redisServer.url });
    const prefix = 'deploy:';
    let hotPath: Awaited<ReturnType<typeof createHotPath>> | undefined;
    const writerDatabase = createDatabase({
      url: bouncerUrl('ledger_writer', 'credana'),
      applicationName: 'deploy-test',
    });
    try {
      await seedAsset(owner.sql, redis, prefix, WETH, WETH_PRICE_E8, Math.floor(Date.now() / 1000));
      const user = await seedUser(owner.sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(10_000n, WETH_PRICE_E8) }],
      });
      hotPath = await createHotPath(
        testConfig(
          { databaseUrl: bouncerUrl('hot_path', 'credana'), redisUrl: redisServer.url, prefix },
          { REDIS_COMMAND_TIMEOUT_MS: '200' },
        ),
      );
      const authorize = async (amountCents: number) =>
        (
          await post(
            hotPath as NonNullable<typeof hotPath>,
            '/stripe/authorizations',
            authorizationRequest({ cardId: user.cardId, amountCents }),
          )
        ).json;
      // The account is rebuilt from Postgres through the pool, then decided in Redis.
      expect((await authorize(1_000)).approved).toBe(true);
      expect((await authorize(2_000)).approved).toBe(true);
      expect((await authorize(50_000)).metadata?.reason).toBe('insufficient_credit');
      // The hot path's connections really are PgBouncer's clients of the transaction pool.
      const clients = await show('clients');
      expect(
        new Set(clients.filter((c) => c['user'] === 'credana_hot_path').map((c) => c['database'])),
      ).toEqual(new Set(['credana']));

      // The ledger writer drains the outbox through the same pool.
      const writerRedis = createRedis({ url: redisServer.url });
      const writer = createLedgerWriter({
        redis: writerRedis,
        sql: writerDatabase.sql,
        prefix,
        consumer: 'deploy-test',
        batchMax: 100,
        batchWaitMs: 10,
        metrics: createLedgerWriterMetrics(),
      });
      await writer.start();
      await waitForEmptyOutbox(redis, prefix, 20_000);
      await writer.stop();
      writerRedis.disconnect();
      const [counts] = await owner.sql<{ decisions: number; holds: number }[]>`select
        (select count(*)::int from decisions) as decisions,
        (select count(*)::int from ledger_transfers) as holds`;
      expect(counts).toEqual({ decisions: 3, holds: 2 });

      // Redis gone: the Postgres fallback decides and books through the transaction pool (its advisory
      // locks are transaction-scoped, its statements unprepared).
      await redisServer.kill();
      const fallback = await authorize(500);
      expect(fallback.approved).toBe(true);
      const [row] = await owner.sql<{ source: string; approved: boolean }[]>`
        select source, approved from decisions where id = ${fallback.metadata?.decision_id ?? ''}`;
      expect(row).toEqual({ source: 'postgres', approved: true });
    } finally {
      await hotPath?.close();
      await writerDatabase.close();
      redis.disconnect();
      await redisServer.destroy();
      await owner.close();
    }
  }, 90_000);

  it('keeps the per-chain session lock exclusive on the session pool, and frees it when its holder goes', async () => {
    const first = createDatabase({ url: bouncerUrl('settlement', 'credana_session'), poolMax: 2 });
    const second = createDatabase({ url: bouncerUrl('settlement', 'credana_session'), poolMax: 2 });
    const pooled = createDatabase({ url: bouncerUrl('settlement', 'credana'), poolMax: 1 });
    try {
      const release = await tryExclusive(first.sql, 4242, 1);
      expect(release).not.toBeNull();
      // In transaction pooling the lock's server connection would be handed to the second client, which
      // would then "hold" it too: two settlement workers.
      expect(await tryExclusive(second.sql, 4242, 1)).toBeNull();
      // A worker pointed at the transaction pool by mistake refuses rather than sharing the lock.
      await expect(tryExclusive(pooled.sql, 4242, 1)).rejects.toThrow(/direct or session-pooled/);
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
      await pooled.close();
    }
  });

  it("lets the anchorer's role read the audit head through the session pool", async () => {
    const anchorer = createDatabase({ url: bouncerUrl('reconciliation', 'credana_session'), poolMax: 1 });
    const owner = createDatabase({ url: databaseUrl, poolMax: 1 });
    try {
      const headOf = async (sql: typeof owner.sql) =>
        (
          await sql<
            { head: string }[]
          >`select last_id::text || ':' || last_hash as head from audit_log_head where singleton`
        )[0]?.head;
      const [who] = await anchorer.sql<{ current_user: string }[]>`select current_user`;
      expect(who?.current_user).toBe('credana_reconciliation');
      expect(await headOf(anchorer.sql)).toBe(await headOf(owner.sql));
    } finally {
      await anchorer.close();
      await owner.close();
    }
  });

  it("service-roles.sql overrides the service roles' timeout only when asked, never reconciliation's", async () => {
    const settings = async () => {
      const owner = createDatabase({ url: databaseUrl, poolMax: 1 });
      try {
        const rows = await owner.sql<{ rolname: string; timeout: string | null }[]>`
          select rolname, (select s from unnest(rolconfig) s where s like 'statement_timeout=%') as timeout
          from pg_roles where rolname like 'credana\\_%' and rolname not in ('credana_support_ro', 'credana_analytics')
          order by rolname`;
        return Object.fromEntries(rows.map((r) => [r.rolname, r.timeout]));
      } finally {
        await owner.close();
      }
    };
    const before = await settings();
    expect(before['credana_hot_path']).toBe('statement_timeout=5s');
    expect(before['credana_reconciliation']).toBe('statement_timeout=60s');
    runServiceRoles(['-v', 'statement_timeout_ms=4321']);
    const after = await settings();
    expect(Object.keys(after)).toHaveLength(8);
    for (const [role, timeout] of Object.entries(after))
      expect(timeout, role).toBe(
        role === 'credana_reconciliation' ? 'statement_timeout=60s' : 'statement_timeout=4321',
      );
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
        ...redisEnv(services),
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
