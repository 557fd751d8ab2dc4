/**
 * Where tests find the shared services. These defaults are the machine's standard ports; a test
 * run may point elsewhere with TEST_DATABASE_URL / TEST_REDIS_URL (read through shared/config's
 * test loader, never process.env directly).
 */
import { testServiceUrls } from '../../shared/config.ts';

export const TEMPLATE_DB = 'credana_template';

export function baseDatabaseUrl(): string {
  return testServiceUrls().databaseUrl;
}

export function redisUrl(): string {
  return testServiceUrls().redisUrl;
}

export function withDatabase(name: string): string {
  const url = new URL(baseDatabaseUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

export function adminUrl(): string {
  return withDatabase('postgres');
}
