import { defineConfig } from 'drizzle-kit';

// Generation only: `npm run db:generate` diffs shared/db/schema.ts against drizzle/meta.
// Applying migrations is `npm run db:migrate` (scripts/db-migrate.ts), which reads DATABASE_URL via shared/config.
export default defineConfig({
  dialect: 'postgresql',
  schema: './shared/db/schema.ts',
  out: './drizzle',
  strict: true,
  verbose: true,
});
