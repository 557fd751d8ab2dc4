/** `npm run db:migrate`: creates the financial database if needed and applies every migration. */
import { configFromProcess } from '../shared/config.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';

const config = configFromProcess();
await ensureDatabase(config.DATABASE_URL);
await migrateDatabase(config.DATABASE_URL);
process.stdout.write('db:migrate: financial database is up to date\n');
