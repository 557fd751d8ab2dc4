/**
 * postgres.js 3.4.9 can throw from a timer when a connection closes with a write still deferred
 * (`nextWrite` on a null socket: porsager/postgres#1154, #1208, fixes unreleased), which kills the
 * process — seen killing the ledger writer when Postgres stopped (ledger-writer/
 * postgres-outage-live.test.ts). `patches/postgres+3.4.9.patch`, applied by patch-package on every
 * `npm install` / `npm ci`, settles the pending queries instead. This checks the installed driver, both
 * the ESM build the services load and the CommonJS one, carries it: a clean install without it fails here.
 *
 * The same patch keeps a FATAL that closes a connection (PgBouncer's `server_login_retry` while
 * Postgres is down, docs/chaos.md bug 1) from becoming an unhandledRejection: the array-types query's
 * promise is no longer dropped, and `closed()` delivers the stored error to the waiting queries and
 * forgets the current query (porsager/postgres#1086, #1192, #1223). Its behaviour against a real
 * PgBouncer is driver-pgbouncer-fatal.test.ts; this checks both builds carry it.
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

  it.each(['src/connection.js', 'cjs/src/connection.js'])(
    '%s delivers a FATAL that closes the connection to the waiting queries',
    (file) => {
      const source = readFileSync(path.join(root, file), 'utf8');
      expect(source).toContain('return fetchArrayTypes().catch(noop)');
      expect(source).not.toMatch(/return fetchArrayTypes\(\)\n/);
      const start = source.indexOf('async function closed(');
      const closed = source.slice(start, source.indexOf('\n  }\n', start));
      expect(closed).toMatch(
        /const fatal = errorResponse\n\s*errorResponse = null\n\s*fatal && \(query \|\| initial \|\| sent\.length\) && error\(fatal\)/,
      );
      // Both ways out of closed() forget the current query, so a reused connection starts clean.
      expect(closed.match(/query = results = null/g)).toHaveLength(2);
    },
  );
});
