/**
 * Starts a real local chain: `hardhat node` (Hardhat 2, EDR) as a child process on a free port. Used by
 * scripts/chain-node.ts and by the tests, which really kill it when they are done.
 *
 * @example
 *   const chain = await startLocalChain();
 *   // … use chain.url …
 *   await chain.stop();
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..', '..');

export const HARDHAT_CONFIG_FILE = join(import.meta.dirname, 'hardhat.config.cjs');
/** Hardhat's default accounts come from this mnemonic; each holds 10,000 ETH on the local chain. */
export const LOCAL_MNEMONIC = 'test test test test test test test test test test test junk';
export const LOCAL_CHAIN_ID = 31_337;

export interface LocalChainOptions {
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** Fails the start if the node does not listen within this time. */
  startTimeoutMs?: number;
  /** Copies the node's own output to this process's stderr (it logs every RPC call). */
  verbose?: boolean;
}

export interface LocalChain {
  url: string;
  port: number;
  child: ChildProcess;
  /** SIGTERM, then SIGKILL after a grace period; resolves when the process has exited. */
  stop(): Promise<void>;
}

export async function startLocalChain(options: LocalChainOptions = {}): Promise<LocalChain> {
  const host = options.host ?? '127.0.0.1';
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  mkdirSync(join(root, '.dev', 'hardhat', 'no-sources'), { recursive: true });
  // Through a wrapper that exits when its stdin closes: the node dies with its parent, however it dies.
  const child = spawn(
    process.execPath,
    [
      join(import.meta.dirname, 'node-process.cjs'),
      'node',
      '--hostname',
      host,
      '--port',
      String(options.port ?? 0),
    ],
    { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const port = await new Promise<number>((done, fail) => {
    let seen = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`local chain did not start within ${startTimeoutMs} ms: ${seen.slice(-500)}`));
    }, startTimeoutMs);
    const onData = (chunk: Buffer) => {
      seen += chunk.toString('utf8');
      const match = /JSON-RPC server at https?:\/\/[^:]+:(\d+)\//.exec(seen);
      if (match?.[1] !== undefined) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        done(Number(match[1]));
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => {
      seen += chunk.toString('utf8');
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`local chain exited with ${code} before listening: ${seen.slice(-500)}`));
    });
  });
  // The node logs every call; keep draining its output so a full pipe never blocks it.
  if (options.verbose === true) {
    child.stdout?.pipe(process.stderr);
    child.stderr?.pipe(process.stderr);
  } else {
    child.stdout?.resume();
    child.stderr?.resume();
  }
  return {
    url: `http://${host}:${port}`,
    port,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 2_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
