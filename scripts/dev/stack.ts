/**
 * `<DEV_STATE_DIR>/stack.json`: what `npm run dev` started, written once everything is up and read by
 * `npm run demo` and by anyone poking at the local stack. It holds one secret, the local-development
 * webhook secret (refused in production by shared/config.ts), and no database or Redis credentials.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface StackUser {
  userId: string;
  cardId: string;
  /** The linked wallet (lowercase), a Hardhat account. */
  wallet: string;
  /** Available credit when dev finished starting; JSON-safe integer cents. */
  availableCents: number;
}

export interface StackSummary {
  hotPath: { baseUrl: string; authorizationUrl: string; eventsUrl: string; metricsUrl: string };
  stripe: { webhookSecret: string; apiVersion: string };
  chain: { rpcUrl: string; chainId: number; vault: string; contractsFile: string };
  postgres: { embedded: boolean; dataDir: string | null };
  /** The Redis Cluster's seeds when dev runs on one (--redis-cluster); null on one Redis at REDIS_URL. */
  redis?: { clusterNodes: string[] | null };
  scheduler: { metricsUrl: string | null };
  /** With `--observe`: Prometheus and what it scrapes. */
  prometheus?: { url: string; targets: { job: string; url: string }[] };
  users: StackUser[];
}

export function stackFile(stateDir: string): string {
  return path.join(stateDir, 'stack.json');
}

export function writeStack(stateDir: string, summary: StackSummary): string {
  mkdirSync(stateDir, { recursive: true });
  const file = stackFile(stateDir);
  writeFileSync(file, `${JSON.stringify(summary, null, 2)}\n`);
  return file;
}

/** The stack's summary, or null when dev has not written one (not started, or still starting). */
export function readStack(stateDir: string): StackSummary | null {
  const file = stackFile(stateDir);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as StackSummary) : null;
}
