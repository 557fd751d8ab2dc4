/**
 * Per-test-file isolation on the real services: a fresh database cloned from the migrated template,
 * and a Redis key prefix of its own (all our keys and channels are built from the prefix).
 *
 * Two ways into that database. `databaseUrl` / `database` are the superuser, directly: fixtures,
 * seeding, damage injection and assertions, which are not services. A service under test connects as
 * its own role through the suite's PgBouncer (test/support/global-setup.ts): `urlFor(role)` /
 * `databaseFor(role)`, transaction- or session-pooled as production routes that role
 * (SERVICE_ROLE_POOL_MODES), so a missing grant or a statement that leans on a session fails here.
 * TEST_DATABASE_ROUTE=direct makes them direct URLs, still as the role, for debugging.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { SERVICE_ROLE_POOL_MODES, type ServiceRole } from '../../scripts/dev/pgbouncer.ts';
import { createDatabase, type Database, POOLED_URL_PARAM, type Sql } from '../../shared/db/client.ts';
import { createRedis, deletePrefix, type Redis, type RedisOptions } from '../../shared/redis/client.ts';
import { adminUrl, redisClusterNodes, redisUrl, TEMPLATE_DB, withDatabase } from './env.ts';

export type { ServiceRole } from '../../scripts/dev/pgbouncer.ts';

export interface TestServices {
  /** This file's database as the superuser, directly: for fixtures and assertions, never a service. */
  databaseUrl: string;
  /** A superuser pool on `databaseUrl`. */
  database: Database;
  /**
   * The URL a service running as `role` uses: through the suite's PgBouncer (with
   * `?pgbouncer=transaction` when the role is transaction-pooled), or direct under
   * TEST_DATABASE_ROUTE=direct.
   */
  urlFor(role: ServiceRole): string;
  /** `role` straight to Postgres: for the parts that need a session of their own (LISTEN, migrations). */
  directUrlFor(role: ServiceRole): string;
  /** A new pool on `urlFor(role)`, closed with the services. */
  databaseFor(role: ServiceRole, options?: { poolMax?: number; applicationName?: string }): Database;
  /** This file's one shared pool as `role` (made on first use): for in-process services and jobs. */
  sqlFor(role: ServiceRole): Sql;
  redis: Redis;
  redisUrl: string;
  /** The cluster's seeds (host:port) when the run is on a Redis Cluster (TEST_REDIS=cluster); else empty. */
  redisClusterNodes: readonly string[];
  prefix: string;
  close(): Promise<void>;
}

export async function cloneTemplateDatabase(): Promise<string> {
  // The creation time is in the name so cleanup can tell a killed run's leftovers from a live run's.
  const name = `credana_t_${Math.floor(Date.now() / 1000).toString(36)}_${randomBytes(5).toString('hex')}`;
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  try {
    // CREATE DATABASE … TEMPLATE fails while another session is connected to the template; retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.unsafe(`create database "${name}" template "${TEMPLATE_DB}"`);
        break;
      } catch (error) {
        if (attempt >= 50 || (error as { code?: string }).code !== '55006') throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } finally {
    await admin.end({ timeout: 5 });
  }
  return withDatabase(name);
}

export async function dropDatabase(url: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`drop database if exists "${name}" with (force)`);
  } finally {
    await admin.end({ timeout: 5 });
  }
}

/** Deletes every key under a prefix (SCAN on every primary, never KEYS). */
export { deletePrefix };

/** What a spawned service needs to reach the test's Redis (REDIS_CLUSTER_NODES on the cluster). */
export function redisEnv(
  services: Pick<TestServices, 'redisUrl' | 'redisClusterNodes'>,
): Record<string, string> {
  return {
    REDIS_URL: services.redisUrl,
    ...(services.redisClusterNodes.length === 0
      ? {}
      : { REDIS_CLUSTER_NODES: services.redisClusterNodes.join(',') }),
  };
}

/** Another connection to the test's Redis (one Redis or the cluster), with its own options. */
export function connectRedis(
  services: Pick<TestServices, 'redisUrl' | 'redisClusterNodes'>,
  options: Omit<RedisOptions, 'url' | 'clusterNodes'> = {},
): Redis {
  return createRedis({ ...options, url: services.redisUrl, clusterNodes: services.redisClusterNodes });
}

/** `url` logged in as `role` instead (trust authentication on the test Postgres). */
export function asRole(url: string, role: string): string {
  const parsed = new URL(url);
  parsed.username = role;
  parsed.password = '';
  return parsed.toString();
}

/** The suite's PgBouncer port (null: TEST_DATABASE_ROUTE=direct, or outside vitest). */
async function testPgBouncerPort(): Promise<number | null> {
  const { inject } = await import('vitest');
  return inject('testPgBouncerPort') ?? null;
}

/** `databaseUrl`'s database as `role` through the PgBouncer on `port`, with the role's pool mode. */
export function pooledUrl(databaseUrl: string, role: ServiceRole, port: number): string {
  const url = new URL(asRole(databaseUrl, role));
  url.hostname = '127.0.0.1';
  url.port = String(port);
  if (SERVICE_ROLE_POOL_MODES[role] === 'transaction') url.searchParams.set(POOLED_URL_PARAM, 'transaction');
  return url.toString();
}

export async function setUpServices(): Promise<TestServices> {
  const databaseUrl = await cloneTemplateDatabase();
  const database = createDatabase({ url: databaseUrl, poolMax: 10, applicationName: 'credana-test' });
  const redis = createRedis({ url: redisUrl(), clusterNodes: redisClusterNodes() });
  const prefix = `t${randomBytes(5).toString('hex')}:`;
  const port = await testPgBouncerPort();
  const urlFor = (role: ServiceRole) =>
    port === null ? asRole(databaseUrl, role) : pooledUrl(databaseUrl, role, port);
  const opened: Database[] = [];
  const shared = new Map<ServiceRole, Database>();
  const databaseFor: TestServices['databaseFor'] = (role, options = {}) => {
    const roleDatabase = createDatabase({
      url: urlFor(role),
      poolMax: options.poolMax ?? 10,
      applicationName: options.applicationName ?? role.replace(/^credana_/, 'credana-'),
    });
    opened.push(roleDatabase);
    return roleDatabase;
  };
  return {
    databaseUrl,
    database,
    urlFor,
    directUrlFor: (role) => asRole(databaseUrl, role),
    databaseFor,
    sqlFor(role) {
      let roleDatabase = shared.get(role);
      if (roleDatabase === undefined) {
        roleDatabase = databaseFor(role, { poolMax: 5 });
        shared.set(role, roleDatabase);
      }
      return roleDatabase.sql;
    },
    redis,
    redisUrl: redisUrl(),
    redisClusterNodes: redisClusterNodes(),
    prefix,
    async close() {
      await deletePrefix(redis, prefix);
      redis.disconnect();
      await Promise.all(opened.map((d) => d.close()));
      await database.close();
      await dropDatabase(databaseUrl);
    },
  };
}
