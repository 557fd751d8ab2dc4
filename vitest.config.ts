import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['**/node_modules/**', '.dev/**'],
    globalSetup: ['./test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    // Two cores: two files at a time; files isolate themselves (own database, own Redis prefix).
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
});
