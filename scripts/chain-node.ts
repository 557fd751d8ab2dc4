/**
 * `npm run chain:node`: a local Hardhat chain (chain id 31337) on CHAIN_RPC_URL's host and port, until
 * Ctrl-C. The node is a child process that exits with this one. Then `npm run chain:deploy`.
 * Flag: --port N overrides the port (0 picks a free one).
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { configFromProcess } from '../shared/config.ts';
import { LOCAL_CHAIN_ID, startLocalChain } from './chain/node.ts';

// A local tool: NODE_ENV=development unless set (shared/config.ts, ConfigFromProcessOptions).
const config = configFromProcess({}, { localTool: true });
const rpc = new URL(config.CHAIN_RPC_URL);
const flags = z
  .object({ port: z.coerce.number().int().min(0).max(65_535).optional() })
  .parse(parseArgs({ options: { port: { type: 'string' } } }).values);
if (config.CHAIN_ID !== LOCAL_CHAIN_ID) {
  process.stderr.write(`chain:node: CHAIN_ID is ${config.CHAIN_ID}; the local chain is ${LOCAL_CHAIN_ID}\n`);
  process.exit(78);
}
const started = performance.now();
const chain = await startLocalChain({
  host: rpc.hostname,
  port: flags.port ?? Number(rpc.port || 8545),
});
process.stdout.write(
  `chain:node: Hardhat node (chain ${LOCAL_CHAIN_ID}) at ${chain.url}, ready in ${Math.round(performance.now() - started)} ms; Ctrl-C stops it\n`,
);
const stop = async () => {
  await chain.stop();
  process.exit(0);
};
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
chain.child.once('exit', (code) => {
  process.stderr.write(`chain:node: the node exited (${code})\n`);
  process.exit(1);
});
