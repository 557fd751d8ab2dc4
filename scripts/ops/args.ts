/**
 * What the lookup, backlog and reconcile commands share: strict argument parsing that turns every
 * mistake into one line (exit 2), the `--reason`/`--actor` pair of mutating commands, and a guard
 * that maps failures (a server that does not answer) to one line and exit 1.
 */
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import type { OpsIo } from './command.ts';

/** Bad input: the command prints its one line and exits 2. */
export class BadInput extends Error {}

export const REASON_CHARS_MAX = 500;
export const ACTOR_CHARS_MAX = 100;

type ParseOptions = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>['options']>;

export interface ParsedArgs {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** `parseArgs` in strict mode; an unknown option or a missing value becomes BadInput. */
export function parseStrict(args: readonly string[], options: ParseOptions): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      options,
      allowPositionals: true,
      strict: true,
    });
    return { values: values as ParsedArgs['values'], positionals };
  } catch (error) {
    throw new BadInput((error as Error).message.split('\n')[0] ?? 'bad arguments');
  }
}

export function expectPositionals(positionals: readonly string[], names: readonly string[]): void {
  if (positionals.length !== names.length) {
    throw new BadInput(
      `expects ${names.map((n) => `<${n}>`).join(' ') || 'no arguments'}, got ${positionals.length} argument(s)`,
    );
  }
}

/** An integer option in [min, max], or its default. */
export function intOption(
  values: ParsedArgs['values'],
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = typeof raw === 'string' && /^\d{1,9}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isInteger(n) || n < min || n > max)
    throw new BadInput(`--${name} must be an integer in ${min}..${max}`);
  return n;
}

/** Who and why of a mutating command: `--reason` is required, `--actor` defaults to the OS user. */
export function reasonAndActor(
  values: ParsedArgs['values'],
  defaultActor: string = userInfo().username,
): { actor: string; reason: string } {
  const reason = typeof values['reason'] === 'string' ? values['reason'].trim() : '';
  if (reason === '') throw new BadInput('--reason "..." is required (it goes to the audit log)');
  if (reason.length > REASON_CHARS_MAX)
    throw new BadInput(`--reason is longer than ${REASON_CHARS_MAX} characters`);
  const actor = (typeof values['actor'] === 'string' ? values['actor'] : defaultActor).trim();
  if (actor === '' || actor.length > ACTOR_CHARS_MAX)
    throw new BadInput(`--actor must be 1..${ACTOR_CHARS_MAX} characters`);
  return { actor, reason };
}

/**
 * Runs a command body: BadInput → one line `<name>: <message> (usage: …)` and 2; any other error →
 * one line `<name>: failed: <code> <message>` and 1 (never a stack, never a connection string).
 */
export async function guarded(
  io: OpsIo,
  name: string,
  usage: string,
  body: () => Promise<number>,
): Promise<number> {
  try {
    return await body();
  } catch (error) {
    if (error instanceof BadInput) {
      io.err(`${name}: ${error.message} (usage: ${usage})`);
      return 2;
    }
    const e = error as { code?: unknown; message?: unknown } | null;
    const code = typeof e?.code === 'string' ? `${e.code} ` : '';
    const message = String(e?.message ?? error).split('\n')[0] ?? '';
    io.err(`${name}: failed: ${code}${redactUrls(message)}`);
    return 1;
  }
}

/** Connection strings can carry passwords: an error line never shows one. */
export function redactUrls(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@]*@/gi, '$1***@');
}

/**
 * A line safe for an operator's terminal: control characters (C0, DEL, C1 — an ESC sequence can
 * rewrite the screen or fake a line) and bidirectional overrides (which reorder what is shown) become
 * `?`. Merchant names, emails and display names come from outside and are printed by lookups.
 */
export function printable(line: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
  return line.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, '?');
}

/** `io` whose lines pass through printable(). */
export function printableIo(io: OpsIo): OpsIo {
  return { out: (line) => io.out(printable(line)), err: (line) => io.err(printable(line)) };
}
