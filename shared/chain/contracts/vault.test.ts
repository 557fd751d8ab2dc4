// Proves the contracts' rules on a real Hardhat node: allowed collateral only (USDT-style tokens too),
// withdrawals visible before they leave and paid only with the program's fresh approval of that very
// request and only while the rest covers the debt, spends and refunds recorded once per ref and only by
// the settler, liquidation only of an unhealthy account (the vault's own health check at the feed's
// answer, seizing at most the covered debt plus the bonus) and cutting a pending withdrawal, and
// Chainlink-style feeds (events from the aggregator).
import { type Address, type Hex, keccak256, toBytes } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_COLLATERAL } from '../../../scripts/chain/deploy.ts';
import { type ChainHarness, localAccount, ROLES, startChainHarness } from '../../../scripts/chain/harness.ts';
import { signWithdrawalApproval } from '../../../withdrawals/approval.ts';
import { credanaVaultAbi, mockAggregatorAbi, priceFeedProxyAbi, testTokenAbi } from './index.ts';

const ETH = 10n ** 18n;
const USDC = 10n ** 6n;
let chain: ChainHarness;
let user: Address;

const read = <T>(functionName: string, args: readonly unknown[] = [], address?: Address): Promise<T> =>
  chain.publicClient.readContract({
    address: address ?? chain.contracts.vault,
    abi: credanaVaultAbi,
    functionName,
    args,
  } as never) as Promise<T>;

beforeAll(async () => {
  chain = await startChainHarness({
    withdrawalDelayS: 100,
    collateral: [
      ...DEFAULT_COLLATERAL,
      // USDT-style: transfer and transferFrom return nothing.
      {
        assetId: 'NOBOOL',
        name: 'No Bool',
        tokenDecimals: 6,
        priceDecimals: 8,
        initialPrice: 100000000n,
        noReturn: true,
      },
    ],
  });
  user = chain.account(3);
});

afterAll(async () => {
  await chain?.stop();
});

describe('collateral', () => {
  it('accepts allowed tokens only, and never USDC', async () => {
    await chain.deposit(user, 'WETH', 2n * ETH);
    expect(await read<bigint>('collateralOf', [user, chain.token('WETH')])).toBe(2n * ETH);
    await chain.fund(user, 'USDC', 10n * USDC);
    await expect(
      chain.walletClient.writeContract({
        account: user,
        chain: chain.walletClient.chain,
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'deposit',
        args: [chain.contracts.usdc.address, 1n],
      }),
    ).rejects.toThrow(/CollateralNotAllowed/);
    const weth = chain.contracts.assets.find((a) => a.assetId === 'WETH');
    await expect(
      chain.walletClient.writeContract({
        account: localAccount(ROLES.deployer).address,
        chain: chain.walletClient.chain,
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'setCollateral',
        args: [chain.contracts.usdc.address, weth?.feed as Address, 5_000, 6_000, 3_600, true],
      }),
    ).rejects.toThrow(/CollateralNotAllowed/);
  });

  it('makes a withdrawal visible before the collateral leaves: request, delay, finalize', async () => {
    await chain.requestWithdrawal(user, 'WETH', ETH);
    await expect(chain.requestWithdrawal(user, 'WETH', 1n)).rejects.toThrow(/WithdrawalAlreadyPending/);
    await expect(chain.finalizeWithdrawal(user, 'WETH')).rejects.toThrow(/WithdrawalNotReady/);
    await chain.testClient.increaseTime({ seconds: 101 });
    const balanceBefore = (await chain.publicClient.readContract({
      address: chain.token('WETH'),
      abi: testTokenAbi,
      functionName: 'balanceOf',
      args: [user],
    })) as bigint;
    await chain.finalizeWithdrawal(user, 'WETH');
    expect(await read<bigint>('collateralOf', [user, chain.token('WETH')])).toBe(ETH);
    const balanceAfter = (await chain.publicClient.readContract({
      address: chain.token('WETH'),
      abi: testTokenAbi,
      functionName: 'balanceOf',
      args: [user],
    })) as bigint;
    expect(balanceAfter - balanceBefore).toBe(ETH);
  });
});

describe('debt', () => {
  it('records a spend once per ref, only from the settler; a batch skips refs already recorded', async () => {
    await chain.recordSpendAsSettler(user, 5n * USDC, 'ipi_once');
    expect(await read<bigint>('debtOf', [user])).toBe(5n * USDC);
    expect(await read<boolean>('spendRecorded', [keccak256(toBytes('ipi_once'))])).toBe(true);
    await expect(chain.recordSpendAsSettler(user, 5n * USDC, 'ipi_once')).rejects.toThrow(
      /SpendAlreadyRecorded/,
    );
    await expect(
      chain.walletClient.writeContract({
        account: user,
        chain: chain.walletClient.chain,
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'recordSpend',
        args: [user, 1n, 'ipi_forged'],
      }),
    ).rejects.toThrow(/AccessControlUnauthorizedAccount/);
    const hash = await chain.walletClient.writeContract({
      account: localAccount(ROLES.settler).address,
      chain: chain.walletClient.chain,
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      functionName: 'recordSpends',
      args: [
        [user, user],
        [5n * USDC, 2n * USDC],
        ['ipi_once', 'ipi_new'],
      ],
    });
    const receipt = await chain.publicClient.waitForTransactionReceipt({ hash });
    expect(receipt.logs).toHaveLength(1); // only ipi_new
    expect(await read<bigint>('debtOf', [user])).toBe(7n * USDC);
  });

  it('repays no more than the debt', async () => {
    await expect(chain.repay(user, user, 8n * USDC)).rejects.toThrow(/ExceedsDebt/);
    await chain.repay(user, user, 2n * USDC);
    expect(await read<bigint>('debtOf', [user])).toBe(5n * USDC);
  });

  it('liquidates through the liquidator role only, cutting a pending withdrawal to what is left', async () => {
    await chain.requestWithdrawal(user, 'WETH', ETH); // all that is left
    await chain.fund(chain.account(ROLES.liquidator), 'USDC', 5n * USDC);
    await expect(
      chain.walletClient.writeContract({
        account: user,
        chain: chain.walletClient.chain,
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'liquidate',
        args: [user, chain.token('WETH'), 1n, 1n],
      }),
    ).rejects.toThrow(/AccessControlUnauthorizedAccount/);
    // 1 WETH at $3,000 against $5 of debt: healthy, so the liquidator role itself is refused.
    await expect(chain.liquidate(user, 'WETH', ETH / 4n, 5n * USDC)).rejects.toThrow(/AccountHealthy/);
    // At $5: 1 × 5 × 82.5 % = $4.125 < $5, liquidatable.
    await chain.setPrice('WETH', 5n * 10n ** 8n);
    expect(await read<bigint>('liquidationValueUsdc', [user])).toBe(4_125_000n);
    // $5 × 1.05 at $5 pays for 1.05 WETH at most; $1 covered for 0.21 WETH + 1 wei is one wei too many.
    await expect(chain.liquidate(user, 'WETH', (21n * ETH) / 100n + 1n, 1n * USDC)).rejects.toThrow(
      /SeizeTooLarge/,
    );
    // A price older than priceAgeMaxS never liquidates.
    const snapshot = await chain.snapshot();
    await chain.testClient.increaseTime({ seconds: 4_000 });
    await chain.mine();
    await expect(chain.liquidate(user, 'WETH', ETH / 4n, 5n * USDC)).rejects.toThrow(/PriceUnusable/);
    await chain.revert(snapshot);
    const block = await chain.liquidate(user, 'WETH', ETH / 4n, 5n * USDC);
    const [event] = await chain.publicClient.getContractEvents({
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      eventName: 'Liquidated',
      fromBlock: block,
      toBlock: block,
    });
    expect(event?.args).toMatchObject({
      collateralSeized: ETH / 4n,
      debtCoveredUsdc: 5n * USDC,
      pendingWithdrawalReduced: ETH / 4n,
    });
    const [pending] = await read<readonly [bigint, bigint]>('pendingWithdrawalOf', [
      user,
      chain.token('WETH'),
    ]);
    expect(pending).toBe((3n * ETH) / 4n);
    expect(await read<bigint>('debtOf', [user])).toBe(0n);
    await chain.setPrice('WETH', 3_000n * 10n ** 8n);
  });
});

const signer = () => privateKeyToAccount(localAccount(ROLES.deployer).privateKey);
const approve = async (
  who: Address,
  assetId: string,
  overrides: { amount?: bigint; requestId?: bigint; deadline?: bigint; key?: Hex } = {},
) => {
  const pending = await chain.pendingWithdrawal(who, assetId);
  const now = (await chain.publicClient.getBlock()).timestamp;
  const deadline = overrides.deadline ?? now + 600n;
  const signature = await signWithdrawalApproval(
    overrides.key === undefined ? signer() : privateKeyToAccount(overrides.key),
    chain.contracts.chainId,
    chain.contracts.vault,
    {
      user: who,
      token: chain.token(assetId),
      amount: overrides.amount ?? pending.amount,
      requestId: overrides.requestId ?? pending.requestId,
      deadline,
    },
  );
  return { deadline, signature };
};

describe('withdrawals: approval and on-chain solvency', () => {
  const borrower = () => chain.account(4);

  it('pays out only with the signer role’s approval of this request, before its deadline, once', async () => {
    const who = borrower();
    await chain.deposit(who, 'WETH', 2n * ETH);
    await chain.requestWithdrawal(who, 'WETH', ETH / 2n);
    await chain.testClient.increaseTime({ seconds: 101 });
    const now = (await chain.publicClient.getBlock()).timestamp;
    // Expired.
    const expired = await approve(who, 'WETH', { deadline: now - 1n });
    await expect(
      chain.finalizeWithdrawalWith(who, 'WETH', expired.deadline, expired.signature),
    ).rejects.toThrow(/ApprovalExpired/);
    // Forged: signed by a key without the role (the user's own key).
    const forged = await approve(who, 'WETH', { key: localAccount(4).privateKey });
    await expect(
      chain.finalizeWithdrawalWith(who, 'WETH', forged.deadline, forged.signature),
    ).rejects.toThrow(/InvalidApproval/);
    // Signed for another amount, or another request.
    const otherAmount = await approve(who, 'WETH', { amount: ETH });
    await expect(
      chain.finalizeWithdrawalWith(who, 'WETH', otherAmount.deadline, otherAmount.signature),
    ).rejects.toThrow(/InvalidApproval/);
    const good = await approve(who, 'WETH');
    await chain.finalizeWithdrawalWith(who, 'WETH', good.deadline, good.signature);
    expect(await read<bigint>('collateralOf', [who, chain.token('WETH')])).toBe((3n * ETH) / 2n);
    // Replayed: the request is gone; a new request of the same amount has a new id.
    await expect(chain.finalizeWithdrawalWith(who, 'WETH', good.deadline, good.signature)).rejects.toThrow(
      /NoPendingWithdrawal/,
    );
    await chain.requestWithdrawal(who, 'WETH', ETH / 2n);
    await chain.testClient.increaseTime({ seconds: 101 });
    await expect(chain.finalizeWithdrawalWith(who, 'WETH', good.deadline, good.signature)).rejects.toThrow(
      /InvalidApproval/,
    );
    await chain.cancelWithdrawal(who, 'WETH');
  });

  it('refuses, even when approved, a withdrawal that leaves the on-chain debt uncovered; pays the true excess', async () => {
    const who = borrower();
    // 1.5 WETH at $3,000, LTV 80%: borrow power $3,600. Debt $3,000 needs 1.25 WETH to stay.
    await chain.recordSpendAsSettler(who, 3_000n * USDC, 'ipi_solvency');
    await chain.requestWithdrawal(who, 'WETH', (3n * ETH) / 2n); // everything
    await chain.testClient.increaseTime({ seconds: 101 });
    const all = await approve(who, 'WETH');
    await expect(chain.finalizeWithdrawalWith(who, 'WETH', all.deadline, all.signature)).rejects.toThrow(
      /Undercollateralized/,
    );
    await chain.cancelWithdrawal(who, 'WETH');
    await chain.requestWithdrawal(who, 'WETH', ETH / 4n + 1n); // one wei more than the excess
    await chain.testClient.increaseTime({ seconds: 101 });
    const tooMuch = await approve(who, 'WETH');
    await expect(
      chain.finalizeWithdrawalWith(who, 'WETH', tooMuch.deadline, tooMuch.signature),
    ).rejects.toThrow(/Undercollateralized/);
    await chain.cancelWithdrawal(who, 'WETH');
    await chain.requestWithdrawal(who, 'WETH', ETH / 4n); // exactly the excess
    await chain.testClient.increaseTime({ seconds: 101 });
    const excess = await approve(who, 'WETH');
    await chain.finalizeWithdrawalWith(who, 'WETH', excess.deadline, excess.signature);
    expect(await read<bigint>('collateralOf', [who, chain.token('WETH')])).toBe((5n * ETH) / 4n);
    expect(await read<bigint>('borrowPowerUsdc', [who])).toBe(3_000n * USDC);
  });
});

describe('refunds', () => {
  it('lower the debt once per ref; what exceeds the debt is credit the next spend consumes', async () => {
    const who = chain.account(5);
    const settler = localAccount(ROLES.settler).address;
    const send = async (amounts: bigint[], refs: string[]) => {
      const hash = await chain.walletClient.writeContract({
        account: settler,
        chain: chain.walletClient.chain,
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'recordRefunds',
        args: [refs.map(() => who), amounts, refs],
      });
      return chain.publicClient.waitForTransactionReceipt({ hash });
    };
    await chain.recordSpendAsSettler(who, 10n * USDC, 'ipi_r1');
    const first = await send([4n * USDC], ['refund:ipi_a']);
    expect(first.logs).toHaveLength(1);
    expect(await read<bigint>('debtOf', [who])).toBe(6n * USDC);
    const again = await send([4n * USDC, 9n * USDC], ['refund:ipi_a', 'refund:ipi_b']);
    expect(again.logs).toHaveLength(1); // only ipi_b: 6 of debt, 3 of credit
    expect(await read<bigint>('debtOf', [who])).toBe(0n);
    expect(await read<bigint>('refundCreditOf', [who])).toBe(3n * USDC);
    await chain.recordSpendAsSettler(who, 5n * USDC, 'ipi_r2');
    expect(await read<bigint>('debtOf', [who])).toBe(2n * USDC);
    expect(await read<bigint>('refundCreditOf', [who])).toBe(0n);
    await expect(
      chain.walletClient.writeContract({
        account: who,
        chain: chain.walletClient.chain,
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'recordRefunds',
        args: [[who], [1n], ['refund:forged']],
      }),
    ).rejects.toThrow(/AccessControlUnauthorizedAccount/);
  });
});

describe('USDT-style collateral (no bool returned)', () => {
  it('deposits and withdraws through SafeERC20', async () => {
    const who = chain.account(6);
    await chain.deposit(who, 'NOBOOL', 1_000n * USDC);
    expect(await read<bigint>('collateralOf', [who, chain.token('NOBOOL')])).toBe(1_000n * USDC);
    await chain.requestWithdrawal(who, 'NOBOOL', 400n * USDC);
    await chain.testClient.increaseTime({ seconds: 101 });
    await chain.finalizeWithdrawal(who, 'NOBOOL');
    expect(await read<bigint>('collateralOf', [who, chain.token('NOBOOL')])).toBe(600n * USDC);
    const balance = await chain.publicClient.readContract({
      address: chain.token('NOBOOL'),
      abi: testTokenAbi,
      functionName: 'balanceOf',
      args: [who],
    });
    expect(balance).toBe(400n * USDC);
  });
});

describe('price feeds', () => {
  it('answers latestRoundData through the proxy; AnswerUpdated comes from the aggregator', async () => {
    const weth = chain.contracts.assets.find((a) => a.assetId === 'WETH');
    if (weth === undefined) throw new Error('no WETH');
    const block = await chain.setPrice('WETH', 2_900n * 10n ** 8n);
    const [roundId, answer, , updatedAt] = (await chain.publicClient.readContract({
      address: weth.feed,
      abi: priceFeedProxyAbi,
      functionName: 'latestRoundData',
    })) as readonly [bigint, bigint, bigint, bigint, bigint];
    expect(answer).toBe(2_900n * 10n ** 8n);
    expect(roundId).toBe((1n << 64n) | 4n); // phase 1, aggregator round 4 (the liquidation test set two)
    const logs = await chain.publicClient.getLogs({ fromBlock: block, toBlock: block });
    const emitters = new Set(logs.map((l) => l.address.toLowerCase()));
    expect(emitters).toEqual(new Set([weth.aggregator]));
    const [updated] = await chain.publicClient.getContractEvents({
      address: weth.aggregator,
      abi: mockAggregatorAbi,
      eventName: 'AnswerUpdated',
      fromBlock: block,
      toBlock: block,
    });
    expect(updated?.args).toMatchObject({ current: 2_900n * 10n ** 8n, roundId: 4n, updatedAt });
    expect(
      await chain.publicClient.readContract({
        address: weth.feed,
        abi: priceFeedProxyAbi,
        functionName: 'decimals',
      }),
    ).toBe(8);
  });
});

describe('stale prices', () => {
  it('never judge a withdrawal: a held asset with a price older than its limit stops the payout', async () => {
    const who = chain.account(4); // still owes $3,000 against 1.25 WETH
    await chain.requestWithdrawal(who, 'WETH', 1n);
    await chain.testClient.increaseTime({ seconds: 4_000 });
    await chain.mine(1);
    const approval = await approve(who, 'WETH');
    await expect(
      chain.finalizeWithdrawalWith(who, 'WETH', approval.deadline, approval.signature),
    ).rejects.toThrow(/PriceUnusable/);
  });
});
