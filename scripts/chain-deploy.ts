/**
 * `npm run chain:deploy`: deploys the test tokens (WETH 18 decimals, WBTC 8, USDC 6), Chainlink-style
 * feeds (aggregator + proxy) and the vault to the chain at CHAIN_RPC_URL (a local node: it sends from
 * the node's unlocked account #0), grants the settler role to the settler's address (SETTLER_KEY_LABEL's
 * key in the HSM or SETTLER_PRIVATE_KEY; default: local account #1), the liquidator role to
 * LIQUIDATOR_KEY_LABEL's or LIQUIDATOR_PRIVATE_KEY's address (default: local account #2) and the
 * withdrawal-signer role to the withdrawal signer's (default: local account #0), deploys the audit anchor
 * contract with its anchorer role for AUDIT_ANCHOR_KEY_LABEL's or AUDIT_ANCHOR_PRIVATE_KEY's address
 * (default: local account #19), and writes CONTRACTS_FILE.
 *
 * Flags: --seed-db (also upsert the assets table in DATABASE_URL), --with-batcher (the benchmark's
 * driver), --withdrawal-delay-s N (default 3600).
 */
import { parseArgs } from 'node:util';
import type { Address } from 'viem';
import { z } from 'zod';
import { writeContractsFile } from '../shared/chain/contracts/index.ts';
import { CHAIN_SIGNERS, type ChainSignerRole, configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { signerOrExit } from '../shared/hsm/index.ts';
import { deployLocalContracts } from './chain/deploy.ts';
import { localAccount, ROLES, seedAssets } from './chain/harness.ts';

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
/** The address of the signer the config names for `role` (a key in the HSM or a raw key), else `fallback`. */
async function addressOf(role: ChainSignerRole, fallback: Address): Promise<Address> {
  const { keyLabel, privateKey } = CHAIN_SIGNERS[role];
  if (config[keyLabel] === undefined && config[privateKey] === undefined) return fallback;
  const signer = await signerOrExit(config, role, 'chain:deploy');
  signer.close();
  return signer.account.address;
}
const settler = await addressOf('settler', localAccount(ROLES.settler).address);
const withdrawalSigner = await addressOf('withdrawalSigner', localAccount(ROLES.deployer).address);
const liquidator = await addressOf('liquidator', localAccount(ROLES.liquidator).address);
const anchorer = await addressOf('anchorer', localAccount(ROLES.anchorer).address);
const contracts = await deployLocalContracts({
  rpcUrl: config.CHAIN_RPC_URL,
  deployer: localAccount(ROLES.deployer).address,
  settler,
  withdrawalSigner,
  liquidator,
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
