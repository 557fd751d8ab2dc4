/**
 * `npm run chain:deploy`: deploys the test tokens (WETH 18 decimals, WBTC 8, USDC 6), Chainlink-style
 * feeds (aggregator + proxy) and the vault to the chain at CHAIN_RPC_URL (a local node: it sends from
 * the node's unlocked account #0), grants the settler role to SETTLER_PRIVATE_KEY's address (default:
 * local account #1), the liquidator role to local account #2 and the withdrawal-signer role to
 * WITHDRAWAL_SIGNER_PRIVATE_KEY's address (default: local account #0), deploys the audit anchor
 * contract with its anchorer role for AUDIT_ANCHOR_PRIVATE_KEY's address (default: local account #19),
 * and writes CONTRACTS_FILE.
 *
 * Flags: --seed-db (also upsert the assets table in DATABASE_URL), --with-batcher (the benchmark's
 * driver), --withdrawal-delay-s N (default 3600).
 */
import { parseArgs } from 'node:util';
import { privateKeyToAccount } from 'viem/accounts';
import { z } from 'zod';
import { deployLocalContracts } from '../indexer/chain/deploy.ts';
import { localAccount, ROLES, seedAssets } from '../indexer/chain/harness.ts';
import { writeContractsFile } from '../indexer/contracts/index.ts';
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';

const flags = z
  .object({
    'seed-db': z.boolean().default(false),
    'with-batcher': z.boolean().default(false),
    'withdrawal-delay-s': z.coerce
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .default(3_600),
  })
  .parse(
    parseArgs({
      options: {
        'seed-db': { type: 'boolean' },
        'with-batcher': { type: 'boolean' },
        'withdrawal-delay-s': { type: 'string' },
      },
    }).values,
  );

const config = configFromProcess();
const settler =
  config.SETTLER_PRIVATE_KEY === undefined
    ? localAccount(ROLES.settler).address
    : privateKeyToAccount(config.SETTLER_PRIVATE_KEY as `0x${string}`).address;
const withdrawalSigner =
  config.WITHDRAWAL_SIGNER_PRIVATE_KEY === undefined
    ? localAccount(ROLES.deployer).address
    : privateKeyToAccount(config.WITHDRAWAL_SIGNER_PRIVATE_KEY as `0x${string}`).address;
const anchorer =
  config.AUDIT_ANCHOR_PRIVATE_KEY === undefined
    ? localAccount(ROLES.anchorer).address
    : privateKeyToAccount(config.AUDIT_ANCHOR_PRIVATE_KEY as `0x${string}`).address;
const contracts = await deployLocalContracts({
  rpcUrl: config.CHAIN_RPC_URL,
  deployer: localAccount(ROLES.deployer).address,
  settler,
  withdrawalSigner,
  liquidator: localAccount(ROLES.liquidator).address,
  withdrawalDelayS: flags['withdrawal-delay-s'],
  withBatcher: flags['with-batcher'],
  anchorer,
});
if (contracts.chainId !== config.CHAIN_ID) {
  process.stderr.write(
    `chain:deploy: the node is chain ${contracts.chainId}, CHAIN_ID says ${config.CHAIN_ID}\n`,
  );
  process.exit(78);
}
writeContractsFile(config.CONTRACTS_FILE, contracts);
process.stdout.write(
  `chain:deploy: vault ${contracts.vault}, ${contracts.assets.map((a) => a.assetId).join(', ')}; wrote ${config.CONTRACTS_FILE}\n`,
);
if (flags['seed-db']) {
  const database = createDatabase({ url: config.DATABASE_URL, applicationName: 'chain-deploy' });
  try {
    await seedAssets(database.sql, contracts);
    process.stdout.write('chain:deploy: assets table seeded\n');
  } finally {
    await database.close();
  }
}
