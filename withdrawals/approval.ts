/**
 * The EIP-712 withdrawal approval the vault checks in `finalizeWithdrawal`: the program's withdrawal
 * signer approves exactly one pending request (user, token, amount, requestId) until a deadline. The
 * request id is unique across the vault and the request is deleted when finalized, so an approval is
 * good for one payout at most (the id is the nonce).
 */
import type { Address, Hex, LocalAccount } from 'viem';

export const WITHDRAWAL_APPROVAL_TYPES = {
  WithdrawalApproval: [
    { name: 'user', type: 'address' },
    { name: 'token', type: 'address' },
    { name: 'amount', type: 'uint256' },
    { name: 'requestId', type: 'uint64' },
    { name: 'deadline', type: 'uint64' },
  ],
} as const;

export interface WithdrawalApprovalMessage {
  user: Address;
  token: Address;
  amount: bigint;
  requestId: bigint;
  deadline: bigint;
}

export function withdrawalApprovalDomain(chainId: number, vault: Address) {
  return { name: 'CredanaVault', version: '1', chainId, verifyingContract: vault } as const;
}

export async function signWithdrawalApproval(
  signer: LocalAccount,
  chainId: number,
  vault: Address,
  message: WithdrawalApprovalMessage,
): Promise<Hex> {
  return signer.signTypedData({
    domain: withdrawalApprovalDomain(chainId, vault),
    types: WITHDRAWAL_APPROVAL_TYPES,
    primaryType: 'WithdrawalApproval',
    message,
  });
}
