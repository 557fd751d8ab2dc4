// Proves the contracts' rules on a real Hardhat node: allowed collateral only, withdrawals visible
// before they leave (request → delay → finalize), spends recorded once per ref and only by the
// settler, liquidation cuts a pending withdrawal, and Chainlink-style feeds (events from the aggregator).
import { type Address, keccak256, toBytes } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChainHarness, localAccount, ROLES, startChainHarness } from '../chain/harness.ts';
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
  chain = await startChainHarness({ withdrawalDelayS: 100 });
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
    await expect(
      chain.walletClient.writeContract({
        account: localAccount(ROLES.deployer).address,
        chain: chain.walletClient.chain,
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        functionName: 'setCollateralAllowed',
        args: [chain.contracts.usdc.address, true],
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
    ).rejects.toThrow(/Unauthorized/);
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
    ).rejects.toThrow(/Unauthorized/);
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
    expect(roundId).toBe((1n << 64n) | 2n); // phase 1, aggregator round 2
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
    expect(updated?.args).toMatchObject({ current: 2_900n * 10n ** 8n, roundId: 2n, updatedAt });
    expect(
      await chain.publicClient.readContract({
        address: weth.feed,
        abi: priceFeedProxyAbi,
        functionName: 'decimals',
      }),
    ).toBe(8);
  });
});
