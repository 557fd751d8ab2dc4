/**
 * Where tests find the shared services. These defaults are the machine's standard ports; a test
 * run may point elsewhere with TEST_DATABASE_URL / TEST_REDIS_URL (read through shared/config's
 * test loader, never process.env directly).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { testServiceUrls } from '../../shared/config.ts';
import { MIGRATIONS_DIR } from '../../shared/db/migrate.ts';

/**
 * The template database is named after a hash of the migrations, so concurrent test runs share one
 * template safely and a changed migration gets a fresh one.
 */
function templateName(): string {
  const hash = createHash('sha256');
  for (const file of readdirSync(MIGRATIONS_DIR)
    .filter((f) => f.endsWith('.sql'))
    .sort()) {
    hash.update(file).update(readFileSync(path.join(MIGRATIONS_DIR, file)));
  }
  return `credana_template_${hash.digest('hex').slice(0, 12)}`;
}

export const TEMPLATE_DB = templateName();

export function baseDatabaseUrl(): string {
  return testServiceUrls().databaseUrl;
}

/** `cluster` when the run is on its private Redis Cluster (TEST_REDIS=cluster), else `single`. */
export function redisMode(): 'single' | 'cluster' {
  return testServiceUrls().redisMode;
}

/** The run's cluster seeds (host:port); empty on one Redis. */
export function redisClusterNodes(): string[] {
  const urls = testServiceUrls();
  if (urls.redisMode === 'cluster' && urls.redisClusterNodes.length === 0) {
    throw new Error('TEST_REDIS=cluster, but the global setup has not started the cluster');
  }
  return urls.redisMode === 'cluster' ? urls.redisClusterNodes : [];
}

/**
 * The shared Redis's URL. On the cluster it is one node's: a plain connection to it is answered
 * MOVED for most keys, so code that ignores REDIS_CLUSTER_NODES fails loudly instead of half-working.
 */
export function redisUrl(): string {
  const [first] = redisClusterNodes();
  return first === undefined ? testServiceUrls().redisUrl : `redis://${first}`;
}

export function withDatabase(name: string): string {
  const url = new URL(baseDatabaseUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

export function adminUrl(): string {
  return withDatabase('postgres');
}
