/**
 * The fee cap for every transaction the program sends (settlement, refunds, liquidations): sign with
 * `maxFeePerGas = min(2 × estimate, cap)`, and send nothing while the latest block's base fee is above
 * the cap (CHAIN_MAX_FEE_PER_GAS_GWEI). The caller's gauge says whether it is waiting.
 */
import type { Logger } from 'pino';
import type { Counter, Gauge } from 'prom-client';
import type { PublicClient } from 'viem';

const GWEI = 1_000_000_000n;

export interface Fees {
  maxFeePerGas: bigint;
  maxPriorityFeePerGas: bigint;
}

export interface FeeCap {
  /** The fees to sign with, or null while the base fee is above the cap. */
  fees(): Promise<Fees | null>;
}

export function createFeeCap(options: {
  client: PublicClient;
  maxFeePerGasWei: bigint;
  logger: Logger;
  aboveCap: Gauge;
  waits: Counter;
  what: string;
}): FeeCap {
  let capped = false;
  return {
    async fees() {
      const [block, estimate] = await Promise.all([
        options.client.getBlock({ blockTag: 'latest' }),
        options.client.estimateFeesPerGas(),
      ]);
      const baseFee = block.baseFeePerGas ?? 0n;
      if (baseFee > options.maxFeePerGasWei) {
        if (!capped) {
          options.logger.warn(
            {
              baseFeeGwei: (baseFee / GWEI).toString(),
              capGwei: (options.maxFeePerGasWei / GWEI).toString(),
            },
            `base fee above CHAIN_MAX_FEE_PER_GAS_GWEI; ${options.what} waits`,
          );
        }
        capped = true;
        options.aboveCap.set(1);
        options.waits.inc();
        return null;
      }
      if (capped) options.logger.info(`base fee back under the cap; ${options.what} resumes`);
      capped = false;
      options.aboveCap.set(0);
      const doubled = estimate.maxFeePerGas * 2n;
      const maxFeePerGas = doubled < options.maxFeePerGasWei ? doubled : options.maxFeePerGasWei;
      const tip = estimate.maxPriorityFeePerGas ?? 0n;
      return { maxFeePerGas, maxPriorityFeePerGas: tip < maxFeePerGas ? tip : maxFeePerGas };
    },
  };
}
