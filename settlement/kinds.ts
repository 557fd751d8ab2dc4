/**
 * What the settlement worker sends on-chain — captured spend or credited refunds — and the names each
 * uses (table, vault function, vault map); the on-chain ref hash; the nonce counter of the settler's key.
 */
import type { LocalAccount, PublicClient } from 'viem';
import { type Hex, keccak256, toBytes } from 'viem';

/** What is sent on-chain: captured spend or credited refunds. */
export interface Kind {
  name: 'spend' | 'refund';
  table: 'settlements' | 'chain_refunds';
  functionName: 'recordSpends' | 'recordRefunds';
  recordedMap: 'spendRecorded' | 'refundRecorded';
}
export const SPENDS: Kind = {
  name: 'spend',
  table: 'settlements',
  functionName: 'recordSpends',
  recordedMap: 'spendRecorded',
};
export const REFUNDS: Kind = {
  name: 'refund',
  table: 'chain_refunds',
  functionName: 'recordRefunds',
  recordedMap: 'refundRecorded',
};

export interface PendingRow {
  ref: string;
  user_id: string;
  amount_usdc: string;
  attempts: number;
}

export function refHash(ref: string): Hex {
  return keccak256(toBytes(ref));
}

/** The settler's nonces: asked of the node once, then counted here until reset. */
export function createNonces(client: PublicClient, account: LocalAccount) {
  let nextNonce: number | null = null;
  return {
    take: async (): Promise<number> => {
      // The node's pending count is the truth after a restart or a rejected send; between those, our
      // own counter (one worker per key, enforced by an advisory lock) avoids a round trip per batch.
      if (nextNonce === null)
        nextNonce = await client.getTransactionCount({ address: account.address, blockTag: 'pending' });
      return nextNonce++;
    },
    /** A lost, reverted, refused or unsigned transaction may have left a gap: ask the node again. */
    reset: (): void => {
      nextNonce = null;
    },
  };
}

export type Nonces = ReturnType<typeof createNonces>;
