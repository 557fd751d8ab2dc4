/**
 * `npm run cache:warm`: after Redis was restarted empty, before traffic arrives, builds from Postgres
 * what the hot path reads from Redis:
 * - the market: every enabled asset's risk parameters and its price in force (the hashes a hot-path
 *   process loads at start; without them a process started after the loss has no prices, counts all
 *   collateral as worth nothing and declines every swipe until the next oracle round or indexer restart);
 * - every user's cached account (positions, debt, holds of open authorizations, cards, today's spend).
 *   Accounts already cached are left alone (a rebuild never overwrites live holds).
 * Idempotent; prints what it built. Users are read in keyset pages so memory stays bounded.
 * docs/operations.md ("Losing Redis") is the whole recovery.
 */
import { pino } from 'pino';
import { createCacheWriter } from '../indexer/apply/redis.ts';
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { loadAssets } from '../shared/db/queries/chain.ts';
import { warmAccounts } from '../shared/redis/account.ts';
import { createServiceRedis } from '../shared/redis/client.ts';

const config = configFromProcess();
const logger = pino({ level: config.LOG_LEVEL, base: { service: 'cache-warm' } });
const database = createDatabase({ url: config.DATABASE_URL, applicationName: 'cache-warm' });
const redis = createServiceRedis(config, { connectionName: 'cache-warm' });
const started = performance.now();
const assets = await loadAssets(database.sql, config.CHAIN_ID);
await createCacheWriter({ sql: database.sql, redis, prefix: config.REDIS_KEY_PREFIX, logger }).publishMarket(
  assets,
);
const result = await warmAccounts(redis, database.sql, config.REDIS_KEY_PREFIX);
process.stdout.write(
  `cache:warm: market of ${assets.length} assets published; ${result.users} users checked, ${result.installed} accounts built in ${Math.round(performance.now() - started)} ms\n`,
);
redis.disconnect();
await database.close();
