/** Starts an in-process hot path on the test services, and signs and posts events to it. */

import { createHotPath } from '../../hot-path/server.ts';
import { type Config, loadConfig } from '../../shared/config.ts';
import { createDatabase, type Database } from '../../shared/db/client.ts';
import { createMarket, type Market } from '../../shared/redis/market.ts';
import { connectRedis, redisEnv, type ServiceRole, setUpServices, type TestServices } from './db.ts';
import { seedAsset, WETH } from './fixtures.ts';
import { sign, TEST_WEBHOOK_SECRET } from './stripe.ts';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

/**
 * A test configuration on this file's database and Redis prefix. DATABASE_URL is `role`'s URL through
 * the suite's PgBouncer (`services.urlFor`), or `services.databaseUrl` as given when `role` is
 * `'superuser'` (operator tools, which run as the owner) or `services` has no `urlFor`; `extra`
 * overrides anything.
 */
export function testConfig(
  services: Pick<TestServices, 'databaseUrl' | 'redisUrl' | 'prefix'> &
    Partial<Pick<TestServices, 'redisClusterNodes' | 'urlFor'>>,
  extra: Record<string, string> = {},
  role: ServiceRole | 'superuser' = 'credana_hot_path',
): Config {
  return loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATABASE_URL:
      role === 'superuser' || services.urlFor === undefined ? services.databaseUrl : services.urlFor(role),
    ...redisEnv({ redisUrl: services.redisUrl, redisClusterNodes: services.redisClusterNodes ?? [] }),
    REDIS_KEY_PREFIX: services.prefix,
    STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
    // Correctness, not latency, is under test here, on a machine that may be busy running other files:
    // a generous budget keeps slow answers from turning into fallbacks. Tests of the budget itself
    // (hot-path/failures.test.ts) set their own.
    DECISION_BUDGET_MS: '1900',
    REDIS_COMMAND_TIMEOUT_MS: '1000',
    REDIS_DECISION_BUDGET_MS: '1000',
    ...extra,
  });
}

export type HotPath = Awaited<ReturnType<typeof createHotPath>>;

/** An in-process hot path as `credana_hot_path`, through the suite's PgBouncer (transaction pooling). */
export async function startHotPath(
  services: Pick<TestServices, 'databaseUrl' | 'redisUrl' | 'prefix' | 'urlFor'>,
  extra: Record<string, string> = {},
): Promise<HotPath> {
  return createHotPath(testConfig(services, extra, 'credana_hot_path'));
}

export interface PostOptions {
  secret?: string;
  timestampS?: number;
  signature?: string | null;
}

/** What our endpoints answer (the decision, an error, or an event receipt). */
export interface ResponseBody {
  approved?: boolean;
  amount?: number;
  metadata?: { decision_id?: string; reason?: string };
  error?: string;
  received?: boolean;
  processed?: boolean;
  duplicate?: boolean;
}

export async function post(hotPath: HotPath, path: string, body: unknown, options: PostOptions = {}) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const signature =
    options.signature === undefined ? sign(raw, options.secret, options.timestampS) : options.signature;
  if (signature !== null) headers['stripe-signature'] = signature;
  const response = await hotPath.app.request(path, { method: 'POST', body: raw, headers });
  const text = await response.text();
  let json: ResponseBody = {};
  try {
    json = JSON.parse(text) as ResponseBody;
  } catch {
    // Not JSON (e.g. a bare error page); the status tells the story.
  }
  return { status: response.status, json, headers: response.headers };
}

/** WETH's price in the test market: $3,000 with 8 decimals. */
export const WETH_PRICE_E8 = 300_000_000_000n;

export interface HotPathWorld {
  services: TestServices;
  hotPath: HotPath;
  close(): Promise<void>;
}

/** This file's own database and Redis prefix, with WETH and a fresh price of WETH_PRICE_E8 in the market. */
export async function setUpServicesWithWeth(): Promise<TestServices> {
  const services = await setUpServices();
  await seedAsset(
    services.database.sql,
    services.redis,
    services.prefix,
    WETH,
    WETH_PRICE_E8,
    Math.floor(Date.now() / 1000),
  );
  return services;
}

/**
 * The usual test world: this file's own database and Redis prefix, WETH with a fresh price in the
 * market, and an in-process hot path on them.
 */
export async function setUpHotPathWorld(extra: Record<string, string> = {}): Promise<HotPathWorld> {
  const services = await setUpServicesWithWeth();
  const hotPath = await startHotPath(services, extra);
  return {
    services,
    hotPath,
    async close() {
      await hotPath.close();
      await services.close();
    },
  };
}

/**
 * An engine's world whose Postgres pool reaches the server through a TCP proxy the test can stall: the
 * services with WETH priced, a market view, and that pool (named `applicationName`, `poolMax`
 * connections, opened before any stall).
 */
export interface ProxiedPostgresWorld {
  services: TestServices;
  market: Market;
  proxy: TcpProxy;
  database: Database;
  close(): Promise<void>;
}

export async function setUpProxiedPostgresWorld(
  applicationName: string,
  poolMax: number,
): Promise<ProxiedPostgresWorld> {
  const services = await setUpServicesWithWeth();
  const subscriber = connectRedis(services, { shardedSubscriber: true });
  const market = await createMarket(services.redis, subscriber, services.prefix);
  const url = new URL(services.databaseUrl);
  const proxy = await startTcpProxy(Number(url.port), url.hostname);
  url.port = String(proxy.port);
  const database = createDatabase({ url: url.toString(), poolMax, applicationName });
  await database.sql`select 1`;
  return {
    services,
    market,
    proxy,
    database,
    async close() {
      proxy.resume();
      await database.close();
      await proxy.close();
      market.close();
      subscriber.disconnect();
      await services.close();
    },
  };
}
