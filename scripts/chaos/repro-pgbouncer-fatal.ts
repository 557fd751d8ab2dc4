/**
 * Reproduces a crash the chaos run found (seed 1): postgres.js 3.4.9 behind PgBouncer, Postgres stopped
 * (pg_ctl -m immediate). PgBouncer answers new server logins with a FATAL `server_login_retry`
 * ErrorResponse and closes; the driver stores the error (`errorResponse`, connection.js ErrorResponse)
 * and then rejects a promise nobody holds, although every query of the caller has a catch: an
 * unhandledRejection, which kills a Node process (the hot path and the ledger writer both died within
 * 4 s of the stop in the chaos run). Prints how many unhandled rejections it saw: 0 once fixed.
 *
 *   npx tsx scripts/chaos/repro-pgbouncer-fatal.ts
 */
import postgres from 'postgres';
import { startPostgresSide } from './system.ts';

let unhandled = 0;
process.on('unhandledRejection', (error) => {
  unhandled++;
  process.stdout.write(`unhandled rejection: ${String(error)}\n`);
});
const side = await startPostgresSide();
try {
  const url = new URL(side.pgBouncer.url('postgres', 'chaos_template'));
  url.searchParams.delete('pgbouncer');
  const sql = postgres(url.toString(), { max: 4, prepare: false, connect_timeout: 1, onnotice: () => {} });
  await sql`select 1`;
  await side.cluster.stopAsync();
  for (let i = 0; i < 20; i++) {
    await sql`select 1`.catch(() => {});
    await sql.begin(async (tx) => tx`select 1`).catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  await side.cluster.startAsync();
  await sql.end({ timeout: 2 });
} finally {
  await side.destroy();
}
process.stdout.write(`unhandled rejections: ${unhandled}\n`);
process.exitCode = unhandled === 0 ? 0 : 1;
