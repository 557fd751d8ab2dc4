/**
 * Deploys the test tokens, the Chainlink-style feeds and the vault to a local chain, grants the roles,
 * and returns what the contracts file holds. Used by scripts/chain-deploy.ts and by the tests.
 * Sends from the node's unlocked accounts (JSON-RPC accounts), which is the fastest way on Hardhat.
 */
import {
  type Abi,
  type Address,
  createPublicClient,
  createWalletClient,
  type Hex,
  http,
  type PublicClient,
  type WalletClient,
} from 'viem';
import { hardhat } from 'viem/chains';
import {
  auditAnchorAbi,
  auditAnchorBytecode,
  benchBatcherAbi,
  benchBatcherBytecode,
  type ContractsFile,
  credanaVaultAbi,
  credanaVaultBytecode,
  mockAggregatorAbi,
  mockAggregatorBytecode,
  noReturnTokenAbi,
  noReturnTokenBytecode,
  priceFeedProxyAbi,
  priceFeedProxyBytecode,
  testTokenAbi,
  testTokenBytecode,
} from '../../shared/chain/contracts/index.ts';

export interface CollateralSpec {
  assetId: string;
  name: string;
  tokenDecimals: number;
  priceDecimals: number;
  /** Initial oracle answer with `priceDecimals` decimals. */
  initialPrice: bigint;
  /** The vault's on-chain LTV for the withdrawal check (basis points; default 8000). */
  ltvBps?: number;
  /**
   * The vault's on-chain liquidation threshold, the weight of the liquidation health check that `liquidate`
   * enforces (basis points; default 8250, at least the LTV). Keep it equal to the `assets` row's
   * `liquidation_threshold_bps` (the harness's DEFAULT_RISK).
   */
  liquidationThresholdBps?: number;
  /** The vault's price age limit for the withdrawal check (default 3,900 s). */
  priceAgeMaxS?: number;
  /** Deploy a USDT-style token (no bool returned by transfer/transferFrom/approve). */
  noReturn?: boolean;
}

/** WETH (18 decimals) at $3,000 and WBTC (8 decimals) at $60,000, both with 8-decimal feeds. */
export const DEFAULT_COLLATERAL: readonly CollateralSpec[] = [
  {
    assetId: 'WETH',
    name: 'Wrapped Ether',
    tokenDecimals: 18,
    priceDecimals: 8,
    initialPrice: 3_000_00000000n,
    ltvBps: 8_000,
    liquidationThresholdBps: 8_250,
    priceAgeMaxS: 3_900,
  },
  {
    assetId: 'WBTC',
    name: 'Wrapped Bitcoin',
    tokenDecimals: 8,
    priceDecimals: 8,
    initialPrice: 60_000_00000000n,
    ltvBps: 7_300,
    liquidationThresholdBps: 7_800,
    priceAgeMaxS: 3_900,
  },
];

export interface DeployOptions {
  rpcUrl: string;
  /** An unlocked account of the node; becomes the admin and the feeds' owner. */
  deployer: Address;
  settler: Address;
  liquidator: Address;
  /** Holds WITHDRAWAL_SIGNER_ROLE (the program's withdrawal approvals); default: the deployer. */
  withdrawalSigner?: Address;
  withdrawalDelayS?: number;
  collateral?: readonly CollateralSpec[];
  /** Also deploy the benchmark's batch driver. */
  withBatcher?: boolean;
  /** Deploy the audit anchor contract with ANCHORER_ROLE for this address (docs/chain.md). */
  anchorer?: Address;
}

export function localClients(rpcUrl: string): { publicClient: PublicClient; walletClient: WalletClient } {
  const chain = { ...hardhat, id: 31_337 } as const;
  return {
    publicClient: createPublicClient({
      chain,
      transport: http(rpcUrl, { retryCount: 0 }),
      pollingInterval: 50,
    }),
    walletClient: createWalletClient({ chain, transport: http(rpcUrl, { retryCount: 0 }) }),
  };
}

export async function deployLocalContracts(options: DeployOptions): Promise<ContractsFile> {
  const { publicClient, walletClient } = localClients(options.rpcUrl);
  const account = options.deployer;
  const deploy = async (abi: Abi, bytecode: Hex, args: readonly unknown[]): Promise<Address> => {
    const hash = await walletClient.deployContract({
      abi,
      bytecode,
      args,
      account,
      chain: walletClient.chain,
    });
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== 'success' || receipt.contractAddress == null) {
      throw new Error(`deployment failed: ${hash}`);
    }
    return receipt.contractAddress.toLowerCase() as Address;
  };
  const send = async (to: Address, abi: Abi, functionName: string, args: readonly unknown[]) => {
    const hash = await walletClient.writeContract({
      address: to,
      abi,
      functionName,
      args,
      account,
      chain: walletClient.chain,
    });
    const receipt = await publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== 'success') throw new Error(`${functionName} reverted: ${hash}`);
    return receipt;
  };

  const withdrawalDelayS = options.withdrawalDelayS ?? 3_600;
  const usdc = await deploy(testTokenAbi, testTokenBytecode, ['USD Coin', 'USDC', 6]);
  const vault = await deploy(credanaVaultAbi, credanaVaultBytecode, [usdc, BigInt(withdrawalDelayS)]);
  const deployReceipt = await publicClient.getBlockNumber();
  const assets: ContractsFile['assets'] = [];
  for (const spec of options.collateral ?? DEFAULT_COLLATERAL) {
    const token = await deploy(
      spec.noReturn === true ? noReturnTokenAbi : testTokenAbi,
      spec.noReturn === true ? noReturnTokenBytecode : testTokenBytecode,
      [spec.name, spec.assetId, spec.tokenDecimals],
    );
    const aggregator = await deploy(mockAggregatorAbi, mockAggregatorBytecode, [
      spec.priceDecimals,
      `${spec.assetId} / USD`,
      spec.initialPrice,
    ]);
    const feed = await deploy(priceFeedProxyAbi, priceFeedProxyBytecode, [aggregator]);
    await send(vault, credanaVaultAbi, 'setCollateral', [
      token,
      feed,
      spec.ltvBps ?? 8_000,
      spec.liquidationThresholdBps ?? Math.max(spec.ltvBps ?? 8_000, 8_250),
      spec.priceAgeMaxS ?? 3_900,
      true,
    ]);
    assets.push({
      assetId: spec.assetId,
      token,
      tokenDecimals: spec.tokenDecimals,
      feed,
      aggregator,
      priceDecimals: spec.priceDecimals,
    });
  }
  const settlerRole = await publicClient.readContract({
    address: vault,
    abi: credanaVaultAbi,
    functionName: 'SETTLER_ROLE',
  });
  const liquidatorRole = await publicClient.readContract({
    address: vault,
    abi: credanaVaultAbi,
    functionName: 'LIQUIDATOR_ROLE',
  });
  const signerRole = await publicClient.readContract({
    address: vault,
    abi: credanaVaultAbi,
    functionName: 'WITHDRAWAL_SIGNER_ROLE',
  });
  await send(vault, credanaVaultAbi, 'grantRole', [settlerRole, options.settler]);
  await send(vault, credanaVaultAbi, 'grantRole', [liquidatorRole, options.liquidator]);
  await send(vault, credanaVaultAbi, 'grantRole', [signerRole, options.withdrawalSigner ?? account]);
  const batcher =
    options.withBatcher === true ? await deploy(benchBatcherAbi, benchBatcherBytecode, []) : undefined;
  const auditAnchor =
    options.anchorer === undefined
      ? undefined
      : await deploy(auditAnchorAbi, auditAnchorBytecode, [account, options.anchorer]);
  return {
    chainId: await publicClient.getChainId(),
    // The vault's events start at its deployment; the aggregators' initial rounds come later.
    deployBlock: Number(deployReceipt),
    vault,
    usdc: { address: usdc, decimals: 6 },
    withdrawalDelayS,
    assets,
    ...(batcher === undefined ? {} : { batcher }),
    ...(auditAnchor === undefined ? {} : { auditAnchor }),
  };
}

/** Deploys the audit anchor contract alone (admin: `deployer`, an unlocked account of the node). */
export async function deployAuditAnchor(
  rpcUrl: string,
  deployer: Address,
  anchorer: Address,
): Promise<Address> {
  const { publicClient, walletClient } = localClients(rpcUrl);
  const hash = await walletClient.deployContract({
    abi: auditAnchorAbi,
    bytecode: auditAnchorBytecode,
    args: [deployer, anchorer],
    account: deployer,
    chain: walletClient.chain,
  });
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  if (receipt.status !== 'success' || receipt.contractAddress == null)
    throw new Error(`deployment failed: ${hash}`);
  return receipt.contractAddress.toLowerCase() as Address;
}
