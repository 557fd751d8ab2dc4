/**
 * The liquidator's transactions from its own key: nonces (a lost transaction's nonce is reused by the
 * next send, so the lost one can never land too), signing under the fee cap, and the vault's USDC
 * allowance (approved once per process).
 */
import type { Address, Hex, LocalAccount, PublicClient } from 'viem';
import { encodeFunctionData, keccak256 } from 'viem';
import { type ContractsFile, testTokenAbi } from '../shared/chain/contracts/index.ts';
import type { createFeeCap } from '../shared/chain/fees.ts';

const MAX_UINT256 = 2n ** 256n - 1n;

export interface LiquidatorSignerOptions {
  client: PublicClient;
  account: LocalAccount;
  contracts: ContractsFile;
  feeCap: ReturnType<typeof createFeeCap>;
}

export type LiquidatorSigner = ReturnType<typeof createLiquidatorSigner>;

/** The nonces, signer and allowance of one liquidator. */
export function createLiquidatorSigner({ client, account, contracts, feeCap }: LiquidatorSignerOptions) {
  const vault = contracts.vault;
  const chainId = contracts.chainId;
  /** Nonces of lost transactions, reused by the next sends so the lost ones can never land too. */
  const reusable: number[] = [];
  let nextNonce: number | null = null;
  let approved = false;

  const takeNonce = async (): Promise<number> => {
    const lost = reusable.shift();
    if (lost !== undefined) return lost;
    if (nextNonce === null)
      nextNonce = await client.getTransactionCount({ address: account.address, blockTag: 'pending' });
    return nextNonce++;
  };

  const sign = async (to: Address, data: Hex, nonce: number, gas: bigint) => {
    const fees = await feeCap.fees();
    if (fees === null) return null;
    let serialized: Hex;
    try {
      serialized = await account.signTransaction({
        type: 'eip1559',
        chainId,
        nonce,
        to,
        data,
        gas,
        ...fees,
      });
    } catch (error) {
      // The signer failed (an HSM unreachable or refusing): the nonce was not used, so the next send
      // takes it; skipped, it would leave a gap that stops every later transaction of this key.
      reusable.unshift(nonce);
      throw error;
    }
    return { serialized, hash: keccak256(serialized) };
  };

  /** The vault may pull the liquidator's USDC (once per process; the allowance is unlimited). */
  const ensureAllowance = async (): Promise<boolean> => {
    if (approved) return true;
    const allowance = (await client.readContract({
      address: contracts.usdc.address,
      abi: testTokenAbi,
      functionName: 'allowance',
      args: [account.address, vault],
    })) as bigint;
    if (allowance >= MAX_UINT256 / 2n) {
      approved = true;
      return true;
    }
    const nonce = await takeNonce();
    const signed = await sign(
      contracts.usdc.address,
      encodeFunctionData({ abi: testTokenAbi, functionName: 'approve', args: [vault, MAX_UINT256] }),
      nonce,
      100_000n,
    );
    if (signed === null) {
      reusable.unshift(nonce);
      return false;
    }
    await client.sendRawTransaction({ serializedTransaction: signed.serialized });
    await client.waitForTransactionReceipt({ hash: signed.hash, pollingInterval: 100 });
    approved = true;
    return true;
  };

  return {
    /** Nonces of lost or unused sends, taken first by the next sends (kept sorted by reconcile). */
    reusable,
    takeNonce,
    /** The node refused a send: its nonce may be anywhere now, so the node is asked again. */
    resetNonce: (): void => {
      nextNonce = null;
    },
    sign,
    ensureAllowance,
  };
}
