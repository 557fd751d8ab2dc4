/**
 * postgres.js 3.4.9 can throw from a timer when a connection closes with a write still deferred
 * (`nextWrite` on a null socket: porsager/postgres#1154, #1208, fixes unreleased), which kills the
 * process — seen killing the ledger writer when Postgres stopped (hot-path/ledger-writer/
 * postgres-outage-live.test.ts). `patches/postgres+3.4.9.patch`, applied by patch-package on every
 * `npm install` / `npm ci`, settles the pending queries instead. This checks the installed driver, both
 * the ESM build the services load and the CommonJS one, carries it: a clean install without it fails here.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const require = createRequire(import.meta.url);
// `postgres/package.json` is not exported; its CommonJS entry is <root>/cjs/src/index.js.
const root = path.resolve(path.dirname(require.resolve('postgres')), '../..');

describe('the patched postgres.js driver', () => {
  it.each(['src/connection.js', 'cjs/src/connection.js'])(
    '%s guards deferred writes on a closed socket',
    (file) => {
      const source = readFileSync(path.join(root, file), 'utf8');
      const nextWrite = source.slice(
        source.indexOf('function nextWrite('),
        source.indexOf('function connectTimedOut('),
      );
      expect(nextWrite).toMatch(
        /if \(socket === null\) \{[\s\S]*error\(Errors\.connection\('CONNECTION_CLOSED'/,
      );
      // Teardown forgets the deferred write, so a reused connection can flush again.
      for (const teardown of ['function terminate(', 'async function closed(']) {
        const start = source.indexOf(teardown);
        const body = source.slice(start, source.indexOf('\n  }\n', start));
        expect(body).toMatch(/clearImmediate\(nextWriteTimer\)\n\s*chunk = nextWriteTimer = null/);
      }
      expect(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version).toBe('3.4.9');
    },
  );
});
