/**
 * A preload for the chaos harness only (`NODE_OPTIONS=--import=…/clock-offset.mjs`, set by
 * scripts/chaos/system.ts when a run plays `clock_offset` faults): this process's wall clock runs
 * `offsetMs` off, as a machine whose clock NTP has not corrected (or has just stepped). `Date.now()`,
 * `new Date()` and `Date()` read the offset clock; `performance.now()`, `process.hrtime` and timers are
 * the monotonic clock and stay true, as they do on a real machine whose wall clock is stepped.
 *
 * The offset is the integer (milliseconds) in the file `CHAOS_CLOCK_FILE`, read at start (a process
 * restarted during a fault keeps its machine's offset) and again on each SIGUSR2 the harness sends after
 * rewriting the file, so the clock jumps while the process runs. Plain JavaScript: it loads before tsx.
 */
import { readFileSync } from 'node:fs';

const file = process.env.CHAOS_CLOCK_FILE;
const RealDate = globalThis.Date;
const realNow = RealDate.now.bind(RealDate);
let offsetMs = 0;

function readOffset() {
  if (file === undefined) return;
  try {
    const n = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    offsetMs = Number.isFinite(n) ? n : 0;
  } catch {
    offsetMs = 0; // no file yet: no offset
  }
}

/** `Date` with the offset clock; its instances are real Dates (same prototype, `instanceof` both ways). */
function SkewedDate(...args) {
  if (new.target === undefined) return new RealDate(realNow() + offsetMs).toString();
  if (args.length === 0) return Reflect.construct(RealDate, [realNow() + offsetMs], new.target);
  return Reflect.construct(RealDate, args, new.target);
}
SkewedDate.prototype = RealDate.prototype;
SkewedDate.now = () => realNow() + offsetMs;
SkewedDate.parse = RealDate.parse;
SkewedDate.UTC = RealDate.UTC;
Object.defineProperty(SkewedDate, 'name', { value: 'Date' });

readOffset();
globalThis.Date = SkewedDate;
process.on('SIGUSR2', readOffset);
