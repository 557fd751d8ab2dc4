/**
 * The contracts' public face: generated ABIs, the addresses file the deploy script writes and the
 * services read, and the set of events the indexer decodes.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { type Address, getAddress } from 'viem';
import { z } from 'zod';
import { credanaVaultAbi, mockAggregatorAbi, priceFeedProxyAbi } from './abis.ts';

export * from './abis.ts';

const address = z
  .string()
  .regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 20-byte hex address')
  .transform((value) => value.toLowerCase() as Address);

export const contractsFileSchema = z.object({
  chainId: z.number().int().positive(),
  /** First block worth indexing (the vault's deployment block). */
  deployBlock: z.number().int().nonnegative(),
  vault: address,
  usdc: z.object({ address, decimals: z.number().int().min(0).max(36) }),
  withdrawalDelayS: z.number().int().nonnegative(),
  assets: z
    .array(
      z.object({
        assetId: z.string().regex(/^[A-Z0-9]{1,16}$/),
        token: address,
        tokenDecimals: z.number().int().min(0).max(36),
        /** The proxy consumers read (assets.price_feed_address). */
        feed: address,
        /** The underlying aggregator at deploy time; the indexer re-resolves it from the proxy. */
        aggregator: address,
        priceDecimals: z.number().int().min(0).max(36),
      }),
    )
    .min(1),
  /** Only on local chains: the benchmark's batch driver. */
  batcher: address.optional(),
  /** The audit anchor contract (anchorer/): the audit log's chain head, recorded off-database. */
  auditAnchor: address.optional(),
});

export type ContractsFile = z.output<typeof contractsFileSchema>;

export function readContractsFile(path: string): ContractsFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new Error(`contracts file ${path} is missing or not JSON (run npm run chain:deploy)`, {
      cause: error,
    });
  }
  return contractsFileSchema.parse(raw);
}

export function writeContractsFile(path: string, contracts: ContractsFile): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(contractsFileSchema.parse(contracts), null, 2)}\n`);
}

/** Every event the indexer stores: the vault's and the aggregators' (`AnswerUpdated`). */
export const indexedEventsAbi = [
  ...credanaVaultAbi.filter((item) => item.type === 'event'),
  ...mockAggregatorAbi.filter((item) => item.type === 'event' && item.name === 'AnswerUpdated'),
] as const;

/** The proxy's read surface the indexer needs to find the aggregator behind a feed. */
export const feedProxyAbi = priceFeedProxyAbi;

export function checksum(value: string): Address {
  return getAddress(value);
}
