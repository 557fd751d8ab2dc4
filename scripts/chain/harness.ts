/**
 * A real local chain with the contracts deployed, and the actions tests, the benchmark and the dev
 * stack's demo perform on it (`connectChain` for a chain that is already running): deposits,
 * withdrawals, prices, spends, liquidations, mining, snapshots (for reorgs). Also seeds
 * the financial database with the deployed assets and with users linked to chain accounts.
 */
import { randomUUID } from 'node:crypto';
import type postgres from 'postgres';
import {
  type Address,
  createTestClient,
  decodeErrorResult,
  type EncodeFunctionDataParameters,
  encodeFunctionData,
  type Hex,
  http,
  type PublicClient,
  type TestClient,
  type WalletClient,
} from 'viem';
import { mnemonicToAccount, privateKeyToAccount } from 'viem/accounts';
import {
  benchBatcherAbi,
  type ContractsFile,
  credanaVaultAbi,
  mockAggregatorAbi,
  testTokenAbi,
} from '../../shared/chain/contracts/index.ts';
import { signWithdrawalApproval } from '../../withdrawals/approval.ts';
import { type DeployOptions, deployLocalContracts, localClients } from './deploy.ts';
import { LOCAL_MNEMONIC, type LocalChain, startLocalChain } from './node.ts';

/** Hardhat's account i (unlocked on the node; its key derives from the public test mnemonic). */
export function localAccount(index: number): { address: Address; privateKey: Hex } {
  // Deriving from a mnemonic runs PBKDF2 (tens of milliseconds): once per index is enough.
  const cached = accounts.get(index);
  if (cached !== undefined) return cached;
  const account = mnemonicToAccount(LOCAL_MNEMONIC, { addressIndex: index });
  const key = account.getHdKey().privateKey;
  if (key === null) throw new Error('no private key');
  const derived = {
    address: account.address.toLowerCase() as Address,
    privateKey: `0x${Buffer.from(key).toString('hex')}` as Hex,
  };
  accounts.set(index, derived);
  return derived;
}
const accounts = new Map<number, { address: Address; privateKey: Hex }>();

/** Users take accounts from `firstUser` upwards; the audit anchorer uses the last of the 20 accounts. */
export const ROLES = { deployer: 0, settler: 1, liquidator: 2, firstUser: 3, anchorer: 19 } as const;

/** The local deploy gives the withdrawal-signer role to the deployer (account #0). */
export const LOCAL_WITHDRAWAL_SIGNER = ROLES.deployer;

const errorsAbi = [...credanaVaultAbi, ...testTokenAbi, ...mockAggregatorAbi].filter(
  (item) => item.type === 'error',
);

/** Names the custom error a reverted call carries ("deposit reverted: CollateralNotAllowed"). */
export function revertError(functionName: string, error: unknown): Error {
  for (let e: unknown = error, depth = 0; e !== null && e !== undefined && depth < 8; depth++) {
    const holder = e as { data?: unknown; cause?: unknown };
    const nested = (holder.data as { data?: unknown } | undefined)?.data;
    const data = typeof holder.data === 'string' ? holder.data : typeof nested === 'string' ? nested : '';
    if (data.startsWith('0x') && data.length >= 10) {
      try {
        const decoded = decodeErrorResult({ abi: errorsAbi, data: data as Hex });
        return new Error(`${functionName} reverted: ${decoded.errorName}`, { cause: error });
      } catch {
        // not one of ours: keep looking
      }
    }
    e = holder.cause;
  }
  return error instanceof Error ? error : new Error(String(error));
}

export interface AssetRisk {
  ltvBps: number;
  liquidationThresholdBps: number;
  priceAgeMaxS: number;
  /** Oracle sanity (docs/chain.md "Oracle sanity"): the feed's minAnswer/maxAnswer, the largest rise
   * one round may make before a following round must confirm it, the allowed future skew. */
  priceAnswerMin: bigint;
  priceAnswerMax: bigint;
  priceDeviationMaxBps: number;
  priceFutureSkewS: number;
}

const E8 = 10n ** 8n;

/** The local feeds' parameters (8-decimal USD answers). */
export const DEFAULT_RISK: Record<string, AssetRisk> = {
  WETH: {
    ltvBps: 8_000,
    liquidationThresholdBps: 8_250,
    priceAgeMaxS: 3_600 + 300,
    priceAnswerMin: 1n * E8,
    priceAnswerMax: 1_000_000n * E8,
    priceDeviationMaxBps: 3_000,
    priceFutureSkewS: 15,
  },
  WBTC: {
    ltvBps: 7_300,
    liquidationThresholdBps: 7_800,
    priceAgeMaxS: 3_600 + 300,
    priceAnswerMin: 10n * E8,
    priceAnswerMax: 10_000_000n * E8,
    priceDeviationMaxBps: 3_000,
    priceFutureSkewS: 15,
  },
};

/** Inserts (or refreshes) the assets table rows for the deployed contracts. */
export async function seedAssets(
  sql: postgres.Sql,
  contracts: ContractsFile,
  risk: Record<string, AssetRisk> = DEFAULT_RISK,
): Promise<void> {
  for (const asset of contracts.assets) {
    const r = risk[asset.assetId] ?? {
      ltvBps: 5_000,
      liquidationThresholdBps: 6_000,
      priceAgeMaxS: 3_900,
      priceAnswerMin: 1n,
      priceAnswerMax: 10n ** 18n,
      priceDeviationMaxBps: 3_000,
      priceFutureSkewS: 15,
    };
    await sql`
      insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals,
        ltv_bps, liquidation_threshold_bps, price_age_max_s, price_answer_min, price_answer_max,
        price_deviation_max_bps, price_future_skew_s)
      values (${asset.assetId}, ${contracts.chainId}, ${asset.token}, ${asset.tokenDecimals}, ${asset.feed},
        ${asset.priceDecimals}, ${r.ltvBps}, ${r.liquidationThresholdBps}, ${r.priceAgeMaxS},
        ${r.priceAnswerMin.toString()}::numeric, ${r.priceAnswerMax.toString()}::numeric, ${r.priceDeviationMaxBps},
        ${r.priceFutureSkewS})
      on conflict (id) do update set chain_id = excluded.chain_id, token_address = excluded.token_address,
        token_decimals = excluded.token_decimals, price_feed_address = excluded.price_feed_address,
        price_decimals = excluded.price_decimals, ltv_bps = excluded.ltv_bps,
        liquidation_threshold_bps = excluded.liquidation_threshold_bps, price_age_max_s = excluded.price_age_max_s,
        price_answer_min = excluded.price_answer_min, price_answer_max = excluded.price_answer_max,
        price_deviation_max_bps = excluded.price_deviation_max_bps,
        price_future_skew_s = excluded.price_future_skew_s, updated_at = now()`;
  }
}

/** A user with a credit account and, optionally, a linked wallet (tests; production links by signature). */
export async function seedUser(
  sql: postgres.Sql,
  options: { chainId: number; wallet?: Address; creditLimitCents?: bigint; userId?: string },
): Promise<string> {
  const userId = options.userId ?? randomUUID();
  const limit = (options.creditLimitCents ?? 2_500_000n).toString();
  await sql`insert into users (id, credit_limit_cents, daily_limit_cents) values (${userId}, ${limit}, 500000)`;
  await sql`insert into credit_accounts (user_id) values (${userId})`;
  if (options.wallet !== undefined) {
    await sql`insert into wallets (chain_id, address, user_id) values (${options.chainId}, ${options.wallet.toLowerCase()}, ${userId})`;
  }
  return userId;
}

/** What tests, the demo and the dev stack do on a running local chain with the contracts deployed. */
export interface ChainActions {
  url: string;
  contracts: ContractsFile;
  publicClient: PublicClient;
  walletClient: WalletClient;
  testClient: TestClient<'hardhat'>;
  /** Hardhat account i's address. */
  account(index: number): Address;
  token(assetId: string): Address;
  /** Mints `amount` of the asset to `user`, approves the vault, deposits. Returns the deposit's block. */
  deposit(user: Address, assetId: string, amount: bigint): Promise<bigint>;
  /** Mints and approves only (so a later deposit is a single transaction, e.g. inside a fork). */
  fund(user: Address, assetId: string, amount: bigint): Promise<void>;
  depositOnly(user: Address, assetId: string, amount: bigint): Promise<bigint>;
  requestWithdrawal(user: Address, assetId: string, amount: bigint): Promise<bigint>;
  cancelWithdrawal(user: Address, assetId: string): Promise<bigint>;
  /** Finalizes with an approval the local withdrawal signer makes on the spot (no exposure check). */
  finalizeWithdrawal(user: Address, assetId: string): Promise<bigint>;
  /** Finalizes with the given approval (deadline, signature). */
  finalizeWithdrawalWith(user: Address, assetId: string, deadline: bigint, signature: Hex): Promise<bigint>;
  /** The pending request of `user` for the asset: amount, readyAt, requestId. */
  pendingWithdrawal(
    user: Address,
    assetId: string,
  ): Promise<{ amount: bigint; readyAt: bigint; requestId: bigint }>;
  setPrice(assetId: string, answer: bigint): Promise<bigint>;
  repay(payer: Address, user: Address, amountUsdc: bigint): Promise<bigint>;
  recordSpendAsSettler(user: Address, amountUsdc: bigint, ref: string): Promise<bigint>;
  liquidate(user: Address, assetId: string, seized: bigint, coveredUsdc: bigint): Promise<bigint>;
  /** Deposits for many users in one transaction through the BenchBatcher (deploy withBatcher). */
  depositMany(assetId: string, users: readonly Address[], amounts: readonly bigint[]): Promise<bigint>;
  mine(blocks?: number): Promise<bigint>;
  /**
   * Runs `actions` with automine off, so every transaction they send lands in ONE block, then mines
   * it and checks every receipt. Inside, actions resolve at once (with -1n) instead of waiting.
   */
  inOneBlock(actions: () => Promise<unknown>): Promise<bigint>;
  snapshot(): Promise<Hex>;
  revert(id: Hex): Promise<void>;
  head(): Promise<bigint>;
}

/** A local chain started for one test file, with the actions on it. */
export interface ChainHarness extends ChainActions {
  chain: LocalChain;
  stop(): Promise<void>;
}

/** What the groups of chain actions share: the contracts, the client and the transaction sender. */
interface ChainWriting {
  contracts: ContractsFile;
  publicClient: PublicClient;
  vault: Address;
  assetOf: (assetId: string) => ContractsFile['assets'][number];
  write: (
    from: Address,
    address: Address,
    abi: typeof credanaVaultAbi | typeof testTokenAbi | typeof mockAggregatorAbi | typeof benchBatcherAbi,
    functionName: string,
    args: readonly unknown[],
  ) => Promise<bigint>;
}

type WithdrawalActions = Pick<
  ChainActions,
  | 'requestWithdrawal'
  | 'cancelWithdrawal'
  | 'pendingWithdrawal'
  | 'finalizeWithdrawal'
  | 'finalizeWithdrawalWith'
>;

/** A user's withdrawal: request, cancel, read the pending request, finalize with an approval. */
function withdrawalActions({
  contracts,
  publicClient,
  vault,
  assetOf,
  write,
}: ChainWriting): WithdrawalActions {
  const actions: WithdrawalActions = {
    requestWithdrawal: (user, assetId, amount) =>
      write(user, vault, credanaVaultAbi, 'requestWithdrawal', [assetOf(assetId).token, amount]),
    cancelWithdrawal: (user, assetId) =>
      write(user, vault, credanaVaultAbi, 'cancelWithdrawal', [assetOf(assetId).token]),
    async pendingWithdrawal(user, assetId) {
      const [amount, readyAt, requestId] = (await publicClient.readContract({
        address: vault,
        abi: credanaVaultAbi,
        functionName: 'pendingWithdrawalOf',
        args: [user, assetOf(assetId).token],
      })) as readonly [bigint, bigint, bigint];
      return { amount, readyAt, requestId };
    },
    async finalizeWithdrawal(user, assetId) {
      const pending = await actions.pendingWithdrawal(user, assetId);
      const block = await publicClient.getBlock({ blockTag: 'latest' });
      const deadline = block.timestamp + 3_600n;
      const signature = await signWithdrawalApproval(
        privateKeyToAccount(localAccount(LOCAL_WITHDRAWAL_SIGNER).privateKey),
        contracts.chainId,
        vault,
        {
          user,
          token: assetOf(assetId).token,
          amount: pending.amount,
          requestId: pending.requestId,
          deadline,
        },
      );
      return actions.finalizeWithdrawalWith(user, assetId, deadline, signature);
    },
    finalizeWithdrawalWith: (user, assetId, deadline, signature) =>
      write(user, vault, credanaVaultAbi, 'finalizeWithdrawal', [
        assetOf(assetId).token,
        deadline,
        signature,
      ]),
  };
  return actions;
}

/** What the deployer (prices, batched deposits), the settler and the liquidator send. */
function roleActions({
  contracts,
  vault,
  assetOf,
  write,
}: ChainWriting): Pick<ChainActions, 'setPrice' | 'recordSpendAsSettler' | 'liquidate' | 'depositMany'> {
  return {
    setPrice: (assetId, answer) =>
      write(
        localAccount(ROLES.deployer).address,
        assetOf(assetId).aggregator,
        mockAggregatorAbi,
        'transmit',
        [answer],
      ),
    recordSpendAsSettler: (user, amountUsdc, ref) =>
      write(localAccount(ROLES.settler).address, vault, credanaVaultAbi, 'recordSpend', [
        user,
        amountUsdc,
        ref,
      ]),
    /** The liquidator must hold and have approved the USDC (see fund). */
    async liquidate(user, assetId, seized, coveredUsdc) {
      const liquidator = localAccount(ROLES.liquidator).address;
      return write(liquidator, vault, credanaVaultAbi, 'liquidate', [
        user,
        assetOf(assetId).token,
        seized,
        coveredUsdc,
      ]);
    },
    depositMany(assetId, users, amounts) {
      if (contracts.batcher === undefined) throw new Error('deploy with withBatcher: true');
      return write(localAccount(ROLES.deployer).address, contracts.batcher, benchBatcherAbi, 'depositMany', [
        vault,
        assetOf(assetId).token,
        users,
        amounts,
      ]);
    },
  };
}

/**
 * The actions on a running local chain whose contracts are `contracts` (Hardhat's unlocked accounts
 * send every transaction).
 *
 * @example
 *   const chain = connectChain(stack.chain.rpcUrl, readContractsFile(stack.chain.contractsFile));
 *   await chain.deposit(wallet, 'WETH', 10n ** 17n);
 */
export function connectChain(url: string, contracts: ContractsFile): ChainActions {
  const { publicClient, walletClient } = localClients(url);
  const testClient = createTestClient({ mode: 'hardhat', transport: http(url, { retryCount: 0 }) });
  const assetOf = (assetId: string) => {
    const asset = contracts.assets.find((a) => a.assetId === assetId);
    if (asset === undefined) throw new Error(`unknown asset ${assetId}`);
    return asset;
  };
  let batch: Hex[] | null = null;
  const write = async (
    from: Address,
    address: Address,
    abi: typeof credanaVaultAbi | typeof testTokenAbi | typeof mockAggregatorAbi | typeof benchBatcherAbi,
    functionName: string,
    args: readonly unknown[],
  ): Promise<bigint> => {
    // Straight eth_sendTransaction from the node's unlocked account: the node estimates gas and fees
    // itself, so one round trip sends and (automine) mines; viem's writeContract would add several.
    const data = encodeFunctionData({ abi, functionName, args } as EncodeFunctionDataParameters);
    let hash: Hex;
    try {
      hash = (await publicClient.request({
        method: 'eth_sendTransaction',
        params: [{ from, to: address, data, gas: '0x1c9c380' }],
      } as never)) as Hex;
    } catch (error) {
      throw revertError(functionName, error);
    }
    if (batch !== null) {
      batch.push(hash);
      return -1n;
    }
    const receipt =
      (await publicClient.getTransactionReceipt({ hash }).catch(() => null)) ??
      (await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 10 }));
    if (receipt.status !== 'success') throw new Error(`${functionName} reverted (${hash})`);
    return receipt.blockNumber;
  };
  const vault = contracts.vault;
  const writing: ChainWriting = { contracts, publicClient, vault, assetOf, write };
  const actions: ChainActions = {
    url,
    contracts,
    publicClient,
    walletClient,
    testClient,
    account: (index) => localAccount(index).address,
    token: (assetId) => (assetId === 'USDC' ? contracts.usdc.address : assetOf(assetId).token),
    async fund(user, assetId, amount) {
      const token = actions.token(assetId);
      await write(user, token, testTokenAbi, 'mint', [user, amount]);
      await write(user, token, testTokenAbi, 'approve', [vault, 2n ** 256n - 1n]);
    },
    depositOnly: (user, assetId, amount) =>
      write(user, vault, credanaVaultAbi, 'deposit', [assetOf(assetId).token, amount]),
    async deposit(user, assetId, amount) {
      await actions.fund(user, assetId, amount);
      return actions.depositOnly(user, assetId, amount);
    },
    ...withdrawalActions(writing),
    ...roleActions(writing),
    async repay(payer, user, amountUsdc) {
      await actions.fund(payer, 'USDC', amountUsdc);
      return write(payer, vault, credanaVaultAbi, 'repay', [user, amountUsdc]);
    },
    async mine(blocks = 1) {
      // One evm_mine per block: hardhat_mine with a count makes "reserved" blocks whose parent hash
      // is zero, which no real chain does (and which the indexer rightly refuses as inconsistent).
      for (let i = 0; i < blocks; i++) await testClient.request({ method: 'evm_mine', params: [] } as never);
      return publicClient.getBlockNumber({ cacheTime: 0 });
    },
    async inOneBlock(actions) {
      await testClient.setAutomine(false);
      batch = [];
      const sent = batch;
      try {
        await actions();
      } finally {
        batch = null;
        await testClient.request({ method: 'evm_mine', params: [] } as never);
        await testClient.setAutomine(true);
      }
      let block = -1n;
      for (const hash of sent) {
        const receipt = await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 20 });
        if (receipt.status !== 'success') throw new Error(`transaction reverted in batch (${hash})`);
        block = receipt.blockNumber;
      }
      return block === -1n ? publicClient.getBlockNumber({ cacheTime: 0 }) : block;
    },
    snapshot: () => testClient.snapshot(),
    revert: (id) => testClient.revert({ id }),
    head: () => publicClient.getBlockNumber({ cacheTime: 0 }),
  };
  return actions;
}

/** Roles default to the local accounts (ROLES); `settler`, `liquidator`, `withdrawalSigner` may name others (e.g. a key in the HSM). */
export async function startChainHarness(
  options: Partial<
    Pick<
      DeployOptions,
      | 'withdrawalDelayS'
      | 'withBatcher'
      | 'collateral'
      | 'settler'
      | 'liquidator'
      | 'withdrawalSigner'
      | 'anchorer'
    >
  > = {},
): Promise<ChainHarness> {
  const chain = await startLocalChain();
  try {
    const contracts = await deployLocalContracts({
      rpcUrl: chain.url,
      deployer: localAccount(ROLES.deployer).address,
      settler: localAccount(ROLES.settler).address,
      liquidator: localAccount(ROLES.liquidator).address,
      ...options,
    });
    return { ...connectChain(chain.url, contracts), chain, stop: () => chain.stop() };
  } catch (error) {
    await chain.stop();
    throw error;
  }
}
