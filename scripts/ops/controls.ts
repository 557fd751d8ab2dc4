/**
 * Operator commands for the program's controls (docs/controls.md): freeze or unfreeze one card,
 * suspend or reinstate an account, set a credit limit or a daily limit ceiling. Thin: they parse and
 * check the command line, then call shared/controls/program.ts, which owns the change (Postgres,
 * audit row with actor and reason, write-through to Redis).
 */
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import {
  type ChangedBy,
  type ControlsDeps,
  type ControlsOutcome,
  setAccountSuspended,
  setCreditLimit,
  setDailyLimitCeiling,
  setOpsFreeze,
} from '../../shared/controls/program.ts';
import type { OpsCommand, OpsIo } from './command.ts';

export interface ControlsCommandContext {
  /** Opens (once) the connections the commands use; the dispatcher closes them. */
  deps(): Promise<ControlsDeps>;
  /** `--actor` when not given: the OS user. */
  defaultActor?: string;
}

/** Thrown for bad input: the dispatcher prints the one line and exits 2. */
class UsageError extends Error {}

/** Parses `1234.56` or `1234` (dollars, optional two-digit cents) into exact cents. */
export function parseDollarsToCents(text: string): bigint {
  const match = /^(\d{1,14})(?:\.(\d{2}))?$/.exec(text);
  if (match === null)
    throw new UsageError(`${JSON.stringify(text)} is not an amount in dollars like 2500.00`);
  return BigInt(match[1] as string) * 100n + BigInt(match[2] ?? '0');
}

const formatCents = (cents: bigint) => `$${cents / 100n}.${(cents % 100n).toString().padStart(2, '0')}`;

interface Parsed {
  positionals: string[];
  by: ChangedBy;
}

function parse(args: readonly string[], positionalNames: readonly string[], defaultActor: string): Parsed {
  let values: { reason?: string | undefined; actor?: string | undefined };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: { reason: { type: 'string' }, actor: { type: 'string' } },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message.split('\n')[0] ?? 'bad arguments');
  }
  if (positionals.length !== positionalNames.length) {
    throw new UsageError(
      `expects ${positionalNames.map((n) => `<${n}>`).join(' ')}, got ${positionals.length} argument(s)`,
    );
  }
  const reason = values.reason?.trim() ?? '';
  if (reason === '') throw new UsageError('--reason "..." is required (it goes to the audit log)');
  if (reason.length > 500) throw new UsageError('--reason is longer than 500 characters');
  const actor = (values.actor ?? defaultActor).trim();
  if (actor === '') throw new UsageError('--actor must not be empty');
  return { positionals, by: { actor, reason } };
}

function report(io: OpsIo, name: string, outcome: ControlsOutcome, done: string): number {
  if (!outcome.ok) {
    io.err(`${name}: ${outcome.message}`);
    return 2;
  }
  const cache =
    outcome.cache === 'written'
      ? 'in every hot path now'
      : outcome.cache === 'not_cached'
        ? 'not cached; the hot path builds it from Postgres on first use'
        : 'a newer change reached the cache first';
  io.out(`${name}: ${done}${outcome.changed ? '' : ' (it already was)'}; ${cache}`);
  return 0;
}

function command(
  name: string,
  summary: string,
  positionalNames: readonly string[],
  context: ControlsCommandContext,
  act: (
    deps: ControlsDeps,
    positionals: string[],
    by: ChangedBy,
  ) => Promise<{ outcome: ControlsOutcome; done: string }>,
  check: (positionals: string[]) => void = () => {},
): OpsCommand {
  const usage = `npm run ops -- ${name} ${positionalNames.map((n) => `<${n}>`).join(' ')} --reason "..." [--actor name]`;
  return {
    name,
    summary,
    usage,
    mutating: true,
    async run(args, io) {
      let parsed: Parsed;
      try {
        parsed = parse(args, positionalNames, context.defaultActor ?? userInfo().username);
        check(parsed.positionals);
      } catch (error) {
        if (error instanceof UsageError) {
          io.err(`${name}: ${error.message} (usage: ${usage})`);
          return 2;
        }
        throw error;
      }
      try {
        const { outcome, done } = await act(await context.deps(), parsed.positionals, parsed.by);
        return report(io, name, outcome, done);
      } catch (error) {
        // Postgres may have committed before Redis failed: every command writes absolute values, so
        // running it again completes the write-through.
        io.err(`${name}: failed: ${(error as Error).message} (safe to run again)`);
        return 1;
      }
    },
  };
}

const amountOf = (positionals: string[]) => parseDollarsToCents(positionals[1] as string);

/** The six controls commands, bound to their connections. */
export function controlsCommands(context: ControlsCommandContext): OpsCommand[] {
  return [
    command(
      'freeze-card',
      "Freeze one card for the program (the user's unfreeze cannot undo it)",
      ['cardId'],
      context,
      async (deps, [cardId], by) => ({
        outcome: await setOpsFreeze(deps, cardId as string, true, by),
        done: `card ${cardId} frozen by ops`,
      }),
    ),
    command(
      'unfreeze-card',
      "Lift the program's freeze of one card (the user's own freeze stays as they set it)",
      ['cardId'],
      context,
      async (deps, [cardId], by) => ({
        outcome: await setOpsFreeze(deps, cardId as string, false, by),
        done: `ops freeze of card ${cardId} lifted`,
      }),
    ),
    command(
      'suspend-account',
      'Suspend an account: every card declines account_inactive',
      ['userId'],
      context,
      async (deps, [userId], by) => ({
        outcome: await setAccountSuspended(deps, userId as string, true, by),
        done: `account ${userId} suspended`,
      }),
    ),
    command(
      'reinstate-account',
      'Reinstate a suspended account',
      ['userId'],
      context,
      async (deps, [userId], by) => ({
        outcome: await setAccountSuspended(deps, userId as string, false, by),
        done: `account ${userId} active`,
      }),
    ),
    command(
      'set-credit-limit',
      "Set a user's credit limit (the program's cap on their borrow power), in dollars",
      ['userId', 'dollars.cents'],
      context,
      async (deps, positionals, by) => {
        const cents = amountOf(positionals);
        return {
          outcome: await setCreditLimit(deps, positionals[0] as string, cents, by),
          done: `credit limit of ${positionals[0]} set to ${formatCents(cents)}`,
        };
      },
      (positionals) => void amountOf(positionals),
    ),
    command(
      'set-daily-ceiling',
      "Set the program's ceiling on a user's daily limit, in dollars",
      ['userId', 'dollars.cents'],
      context,
      async (deps, positionals, by) => {
        const cents = amountOf(positionals);
        return {
          outcome: await setDailyLimitCeiling(deps, positionals[0] as string, cents, by),
          done: `daily limit ceiling of ${positionals[0]} set to ${formatCents(cents)}`,
        };
      },
      (positionals) => void amountOf(positionals),
    ),
  ];
}
