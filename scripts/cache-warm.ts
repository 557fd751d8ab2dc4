/**
 * `npm run cache:warm`: builds every user's cached account from Postgres (positions, debt, holds of open
 * authorizations, cards, today's spend) — after Redis was restarted empty, before traffic arrives.
 * Accounts already cached are left alone (a rebuild never overwrites live holds). Idempotent; prints
 * how many were installed. Users are read in keyset pages so memory stays bounded.
 */
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { warmAccounts } from '../shared/redis/account.ts';
import { createRedis } from '../shared/redis/client.ts';

const config = configFromProcess();
const database = createDatabase({ url: config.DATABASE_URL, applicationName: 'cache-warm' });
const redis = createRedis({ url: config.REDIS_URL, connectionName: 'cache-warm' });
const started = performance.now();
const result = await warmAccounts(redis, database.sql, config.REDIS_KEY_PREFIX);
process.stdout.write(
  `cache:warm: ${result.users} users checked, ${result.installed} accounts built in ${Math.round(performance.now() - started)} ms\n`,
);
redis.disconnect();
await database.close();
