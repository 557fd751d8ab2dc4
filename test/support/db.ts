/**
 * Per-test-file isolation on the real services: a fresh database cloned from the migrated template,
 * and a Redis key prefix of its own (all our keys and channels are built from the prefix).
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { createDatabase, type Database } from '../../shared/db/client.ts';
import { createRedis, deletePrefix, type Redis, type RedisOptions } from '../../shared/redis/client.ts';
import { adminUrl, redisClusterNodes, redisUrl, TEMPLATE_DB, withDatabase } from './env.ts';

export interface TestServices {
  databaseUrl: string;
  database: Database;
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

export async function setUpServices(): Promise<TestServices> {
  const databaseUrl = await cloneTemplateDatabase();
  const database = createDatabase({ url: databaseUrl, poolMax: 10, applicationName: 'credana-test' });
  const redis = createRedis({ url: redisUrl(), clusterNodes: redisClusterNodes() });
  const prefix = `t${randomBytes(5).toString('hex')}:`;
  return {
    databaseUrl,
    database,
    redis,
    redisUrl: redisUrl(),
    redisClusterNodes: redisClusterNodes(),
    prefix,
    async close() {
      await deletePrefix(redis, prefix);
      redis.disconnect();
      await database.close();
      await dropDatabase(databaseUrl);
    },
  };
}
