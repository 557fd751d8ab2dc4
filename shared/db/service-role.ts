/**
 * It is an invariant that in production no service runs as a superuser (or a role that bypasses row
 * security): a superuser can switch off the append-only and balanced-ledger triggers, so a bug or a
 * stolen service credential could rewrite the books. Each service connects as its own role
 * (drizzle/0001, docs/ledger.md "Connection pooling"); migrations run as the owner.
 *
 * The check does not delay start-up or need Postgres at boot (the hot path must come up and decide
 * from Redis while Postgres is down): it runs in the background, retries until Postgres answers once,
 * and then exits the process with status 78 and one line if the role is a superuser.
 */
import type { Sql } from './client.ts';

export interface RoleFacts {
  role: string;
  superuser: boolean;
  bypassesRowSecurity: boolean;
}

export async function roleFacts(sql: Sql): Promise<RoleFacts> {
  const [row] = await sql<{ role: string; superuser: boolean; bypass: boolean }[]>`
    select current_user as role, rolsuper as superuser, rolbypassrls as bypass
    from pg_roles where rolname = current_user`;
  if (row === undefined) throw new Error('current_user has no pg_roles row');
  return { role: row.role, superuser: row.superuser, bypassesRowSecurity: row.bypass };
}

/** The one line a refused role gets, or null when the role is fit for a service. */
export function serviceRoleProblem(facts: RoleFacts): string | null {
  if (facts.superuser) {
    return `connected to Postgres as ${facts.role}, a superuser; a service connects as its own role (docs/ledger.md)`;
  }
  if (facts.bypassesRowSecurity) {
    return `connected to Postgres as ${facts.role}, which bypasses row security; a service connects as its own role (docs/ledger.md)`;
  }
  return null;
}

export interface ServiceRoleGuardOptions {
  sql: Sql;
  nodeEnv: 'development' | 'test' | 'production';
  service: string;
  /** Until Postgres answers once. */
  retryMs?: number;
  /** Called with the line when the role is refused; the default writes it and exits 78. */
  refuse?: (line: string) => void;
}

/** Starts the background check (production only); `stop` ends its retries. */
export function guardServiceRole(options: ServiceRoleGuardOptions): { stop(): void; checked: Promise<void> } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let settle = () => {};
  const refuse =
    options.refuse ??
    ((line: string) => {
      process.stderr.write(`${options.service}: ${line} (refused: NODE_ENV=production)\n`);
      process.exit(78);
    });
  const checked =
    options.nodeEnv !== 'production'
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          settle = resolve;
          const attempt = () => {
            if (stopped) return;
            roleFacts(options.sql).then(
              (facts) => {
                const problem = serviceRoleProblem(facts);
                if (problem !== null && !stopped) refuse(problem);
                resolve();
              },
              () => {
                // Postgres not answering yet: the service runs meanwhile, and is judged once it does.
                timer = setTimeout(attempt, options.retryMs ?? 5_000);
                timer.unref();
              },
            );
          };
          attempt();
        });
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      settle();
    },
    checked,
  };
}
