/**
 * One operator command of `npm run ops -- <command> [args]`. Every mutating command needs a reason
 * (`--reason "..."`) and records who (`--actor`, default the OS user) and why in the audit log.
 */
export interface OpsCommand {
  /** The word after `npm run ops --`, kebab-case, e.g. `freeze-card`. */
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Usage line(s) shown by `npm run ops -- help <name>` and on bad input. */
  usage: string;
  mutating: boolean;
  /** Returns the process exit code: 0 done, 2 bad input (one clear line on stderr), 1 failed. */
  run(args: readonly string[], io: OpsIo): Promise<number>;
}

export interface OpsIo {
  out(line: string): void;
  err(line: string): void;
}
