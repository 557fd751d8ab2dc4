/**
 * The chain side of a chaos run (`--chain`): a private Hardhat node with the vault and the oracle
 * deployed, the contracts file the indexer and the settlement worker read, and what the harness reads
 * back from the chain at the end (the vault's state per wallet, every log of the vault and the feeds).
 * The harness itself talks to the node directly; the processes reach it through TCP proxies of their
 * own (system.ts), so a fault can stall, cut or slow the chain RPC of one process.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type postgres from 'postgres';
import { type Address, encodeFunctionData, type Hex } from 'viem';
import { createSync, type DecodedLog } from '../../indexer/sync/index.ts';
import { accountHealthWad } from '../../liquidator/index.ts';
import {
  type ContractsFile,
  credanaVaultAbi,
  writeContractsFile,
} from '../../shared/chain/contracts/index.ts';
import type { PriceQuote } from '../../shared/credit.ts';
import { loadAssets } from '../../shared/db/queries/chain.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { ACCOUNT, pricesKey, userKeys } from '../../shared/redis/keys.ts';
import { deployLocalContracts } from '../chain/deploy.ts';
import { type ChainActions, connectChain, localAccount, ROLES } from '../chain/harness.ts';
import { type LocalChain, startLocalChain } from '../chain/node.ts';
import type { ChainFacts } from './history.ts';

/** Blocks before a deposit, a cancel or a price rise counts (the processes' CHAIN_CONFIRMATIONS). */
export const CHAIN_CONFIRMATIONS = 2;
/** The indexer's REORG_DEPTH_MAX: well above the deepest reorg the workload makes. */
export const REORG_DEPTH_MAX = 64;
/**
 * The vault's withdrawal delay in chaos runs: short, so a request matures within a run and the workload
 * can finalize it (production: an hour, scripts/dev.ts). The contract takes any delay (no minimum); the
 * indexer, the approver and the hot path never read it (the vault alone checks `readyAt`).
 */
export const CHAIN_WITHDRAWAL_DELAY_S = 2;
/** The liquidator's test USDC (as scripts/dev.ts mints it): $1,000,000. */
const LIQUIDATOR_USDC_FUNDING = 1_000_000n * 10n ** 6n;

export interface ChainSide {
  node: LocalChain;
  actions: ChainActions;
  contracts: ContractsFile;
  contractsFile: string;
  weth: { token: Address; aggregator: Address };
  /**
   * Debt from outside the run's card traffic (as earlier days' settled captures would be): a
   * `recordSpend` from the deployer, which holds the settler role besides the settlement worker's key
   * (its own account, so the worker's nonces are untouched). Returns the block.
   */
  recordOutsideSpend(wallet: Address, amountUsdc: bigint, ref: string): Promise<bigint>;
  /** The vault's borrow power of a wallet (USDC, 6 decimals): what a spend may bring its debt up to. */
  borrowPowerUsdc(wallet: Address): Promise<bigint>;
  /** The vault's state of a wallet for WETH. */
  vaultState(wallet: Address): Promise<{ collateralBase: bigint; pendingBase: bigint; debtUsdc: bigint }>;
  destroy(): Promise<void>;
}

export async function startChainSide(): Promise<ChainSide> {
  const node = await startLocalChain();
  try {
    const contracts = await deployLocalContracts({
      rpcUrl: node.url,
      deployer: localAccount(ROLES.deployer).address,
      settler: localAccount(ROLES.settler).address,
      liquidator: localAccount(ROLES.liquidator).address,
      withdrawalDelayS: CHAIN_WITHDRAWAL_DELAY_S,
    });
    const dir = mkdtempSync(path.join(tmpdir(), 'credana-chaos-chain-'));
    const contractsFile = path.join(dir, 'contracts.json');
    writeContractsFile(contractsFile, contracts);
    const actions = connectChain(node.url, contracts);
    const asset = contracts.assets.find((a) => a.assetId === 'WETH');
    if (asset === undefined) throw new Error('no WETH in the deployed contracts');
    const weth = { token: asset.token, aggregator: asset.aggregator };
    // The liquidator repays liquidated debt from its own USDC: minted to it, as the dev stack does
    // (scripts/dev.ts), and approved to the vault.
    await actions.fund(localAccount(ROLES.liquidator).address, 'USDC', LIQUIDATOR_USDC_FUNDING);
    const read = (functionName: string, args: readonly unknown[]) =>
      actions.publicClient.readContract({
        address: contracts.vault,
        abi: credanaVaultAbi,
        functionName,
        args,
      } as never) as Promise<unknown>;
    const deployer = localAccount(ROLES.deployer).address;
    const sendAsDeployer = async (functionName: string, args: readonly unknown[]): Promise<bigint> => {
      const hash = (await actions.publicClient.request({
        method: 'eth_sendTransaction',
        params: [
          {
            from: deployer,
            to: contracts.vault,
            data: encodeFunctionData({ abi: credanaVaultAbi, functionName, args } as never),
            gas: '0x7a1200',
          },
        ],
      } as never)) as Hex;
      const receipt = await actions.publicClient.waitForTransactionReceipt({ hash, pollingInterval: 50 });
      if (receipt.status !== 'success') throw new Error(`${functionName} reverted`);
      return receipt.blockNumber;
    };
    await sendAsDeployer('grantRole', [await read('SETTLER_ROLE', []), deployer]);
    return {
      node,
      actions,
      contracts,
      contractsFile,
      weth,
      recordOutsideSpend: (wallet, amountUsdc, ref) =>
        sendAsDeployer('recordSpend', [wallet, amountUsdc, ref]),
      borrowPowerUsdc: async (wallet) => (await read('borrowPowerUsdc', [wallet])) as bigint,
      async vaultState(wallet) {
        const collateralBase = (await read('collateralOf', [wallet, weth.token])) as bigint;
        const pending = (await read('pendingWithdrawalOf', [wallet, weth.token])) as readonly [
          bigint,
          bigint,
          bigint,
        ];
        const debtUsdc = (await read('debtOf', [wallet])) as bigint;
        return { collateralBase, pendingBase: pending[0], debtUsdc };
      },
      async destroy() {
        await node.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await node.stop();
    throw error;
  }
}

/**
 * What the chain and the indexed state hold at the end: every log of the vault and the feed against
 * chain_events (each canonical log stored once and, when confirmed, applied; no row of an orphaned
 * block), and per user the vault's state against Postgres and Redis.
 */
export async function gatherChainFacts(
  chain: ChainSide,
  sql: postgres.Sql,
  redis: Redis,
  prefix: string,
  users: readonly { userId: string; wallet?: string }[],
): Promise<ChainFacts> {
  const head = await chain.actions.head();
  const indexerReorgs = (
    await sql<{ depth: number; ancestor: string }[]>`
      select (data->>'depth')::int as depth, data->'ancestor'->>'number' as ancestor from audit_log
      where action = 'chain_reorg' order by id`
  ).map((r) => ({ depth: r.depth, ancestor: r.ancestor }));
  const sync = createSync({
    client: chain.actions.publicClient,
    vault: chain.contracts.vault,
    aggregators: chain.contracts.assets.map((a) => a.aggregator),
    reorgDepthMax: REORG_DEPTH_MAX,
  });
  const logs = await sync.getDecodedLogs(BigInt(chain.contracts.deployBlock), head);
  const key = (hash: string, index: number | bigint) => `${hash.toLowerCase()}:${index}`;
  const rows = await sql<{ block_hash: string; log_index: number; block_number: string; applied: boolean }[]>`
    select block_hash, log_index, block_number::text, applied_at is not null as applied from chain_events
    where chain_id = ${chain.contracts.chainId}`;
  const byKey = new Map(rows.map((r) => [key(r.block_hash, r.log_index), r]));
  const canonical = new Set<string>();
  const missingLogs: string[] = [];
  const unappliedLogs: string[] = [];
  const confirmedUpTo = head - BigInt(CHAIN_CONFIRMATIONS);
  for (const log of logs) {
    const k = key(log.blockHash, log.logIndex);
    canonical.add(k);
    const row = byKey.get(k);
    const label = `${log.eventName} block ${log.blockNumber} ${k}`;
    if (row === undefined) missingLogs.push(label);
    else if (!row.applied && log.blockNumber <= confirmedUpTo && CREDIT_EVENTS.has(log.eventName))
      unappliedLogs.push(label);
  }
  const liquidations = await liquidationFacts(chain, sql, logs, users);
  const extraRows = rows
    .filter((r) => !canonical.has(key(r.block_hash, r.log_index)))
    .map((r) => `block ${r.block_number} ${key(r.block_hash, r.log_index)}`);

  const vault: ChainFacts['vault'] = {};
  const settledNetCents: ChainFacts['settledNetCents'] = {};
  const reviewHeldCents: Record<string, string> = {};
  const settlementsConfirmedCents: Record<string, string> = {};
  const settlementLines: Record<string, string[]> = {};
  for (const u of users) {
    if (u.wallet === undefined) continue;
    const onChain = await chain.vaultState(u.wallet as Address);
    const [position] = await sql<{ c: string; w: string }[]>`
      select collateral_base::text as c, pending_withdrawal_base::text as w from positions
      where user_id = ${u.userId} and asset_id = 'WETH'`;
    const [account] = await sql<{ d: string }[]>`
      select debt_onchain_usdc::text as d from credit_accounts where user_id = ${u.userId}`;
    const [c, w, d] = await redis.hmget(
      userKeys(prefix, u.userId).account,
      `${ACCOUNT.collateralPrefix}WETH`,
      `${ACCOUNT.pendingWithdrawalPrefix}WETH`,
      ACCOUNT.debtOnchainUsdc,
    );
    vault[u.userId] = {
      chain: {
        collateral: onChain.collateralBase.toString(),
        pending: onChain.pendingBase.toString(),
        debtUsdc: onChain.debtUsdc.toString(),
      },
      pg: { collateral: position?.c ?? '0', pending: position?.w ?? '0', debtUsdc: account?.d ?? '0' },
      redis: { collateral: c ?? '0', pending: w ?? '0', debtUsdc: d ?? '0' },
    };
    const [net] = await sql<{ n: string }[]>`
      select ((select coalesce(sum(amount_cents), 0) from settlements where user_id = ${u.userId} and status = 'confirmed')
        - (select coalesce(sum(amount_cents), 0) from chain_refunds where user_id = ${u.userId} and status = 'confirmed'))::text as n`;
    settledNetCents[u.userId] = net?.n ?? '0';
    const [held] = await sql<{ held: string; settled: string }[]>`
      select (select coalesce(-sum(amount_cents), 0) from ledger_entries
                where user_id = ${u.userId} and account = 'user_refunds_held')::text as held,
             (select coalesce(sum(amount_cents), 0) from settlements
                where user_id = ${u.userId} and status = 'confirmed')::text as settled`;
    reviewHeldCents[u.userId] = held?.held ?? '0';
    settlementsConfirmedCents[u.userId] = held?.settled ?? '0';
    const rows = await sql<{ line: string }[]>`
      select 'settlement ' || ref || ' ' || amount_cents || ' ' || status as line from settlements where user_id = ${u.userId}
      union all select 'chain refund ' || ref || ' ' || amount_cents || ' ' || status from chain_refunds where user_id = ${u.userId}
      union all select 'ledger ' || t.kind || ' ' || t.ref || ' ' || e.amount_cents from ledger_entries e
        join ledger_transfers t on t.id = e.transfer_id
        where e.user_id = ${u.userId} and e.account = 'user_unsettled'`;
    settlementLines[u.userId] = rows.map((r) => r.line);
  }
  const unconfirmed = await sql<{ ref: string; status: string; kind: string }[]>`
    select ref, status, 'settlement' as kind from settlements where status <> 'confirmed'
    union all select ref, status, 'chain refund' as kind from chain_refunds where status <> 'confirmed'`;
  const aggregator = chain.weth.aggregator;
  const priceOnChain = (await chain.actions.publicClient.readContract({
    address: aggregator,
    abi: LATEST_ANSWER_ABI,
    functionName: 'latestAnswer',
  })) as bigint;
  const priceJson = await redis.hget(pricesKey(prefix), 'WETH');
  return {
    head: head.toString(),
    logsOnChain: logs.length,
    missingLogs,
    extraRows,
    unappliedLogs,
    vault,
    settledNetCents,
    reviewHeldCents,
    settlementsConfirmedCents,
    unconfirmedSettlements: unconfirmed.map((r) => `${r.kind} ${r.ref} ${r.status}`),
    priceOnChain: priceOnChain.toString(),
    indexerReorgs,
    settlementLines,
    priceInRedis: priceJson === null ? 'none' : (JSON.parse(priceJson) as { answer: string }).answer,
    liquidations,
  };
}

/**
 * Every canonical `Liquidated` log with the account as the chain held it just before (the block
 * before: the harness's node mines each transaction in a block of its own) and just after, judged at
 * the feed's answer of that block with the liquidator's own arithmetic; and every `liquidations` row.
 */
async function liquidationFacts(
  chain: ChainSide,
  sql: postgres.Sql,
  logs: readonly DecodedLog[],
  users: readonly { userId: string; wallet?: string }[],
): Promise<NonNullable<ChainFacts['liquidations']>> {
  const userOf = new Map(
    users.flatMap((u) => (u.wallet === undefined ? [] : [[u.wallet.toLowerCase(), u.userId]])),
  );
  const assets = await loadAssets(sql, chain.contracts.chainId);
  const client = chain.actions.publicClient;
  const vault = chain.contracts.vault;
  const snapshot = async (wallet: Address, blockNumber: bigint) => {
    const read = (functionName: string, args: readonly unknown[]) =>
      client.readContract({
        address: vault,
        abi: credanaVaultAbi,
        functionName,
        args,
        blockNumber,
      } as never) as Promise<unknown>;
    const debtUsdc = (await read('debtOf', [wallet])) as bigint;
    const collateral = new Map<string, bigint>();
    const prices = new Map<string, PriceQuote>();
    for (const a of assets) {
      const held = (await read('collateralOf', [wallet, a.token])) as bigint;
      collateral.set(a.assetId, held);
      // The held assets' aggregators (the indexer's source; `latestAnswer` is the MockAggregator's).
      if (held === 0n) continue;
      const aggregator = chain.contracts.assets.find((c) => c.assetId === a.assetId)?.aggregator;
      if (aggregator === undefined) continue;
      const answer = (await client.readContract({
        address: aggregator,
        abi: LATEST_ANSWER_ABI,
        functionName: 'latestAnswer',
        blockNumber,
      })) as bigint;
      // Judged at the feed's answer itself: its age is not the question here.
      prices.set(a.assetId, { answer, updatedAtS: 0 });
    }
    const health = accountHealthWad({ debtUsdc, collateral }, assets, prices, 0);
    return {
      debtUsdc: debtUsdc.toString(),
      collateralWeth: (collateral.get('WETH') ?? 0n).toString(),
      priceWethE8: (prices.get('WETH')?.answer ?? 0n).toString(),
      healthWad: health === null ? 'no debt' : String(health),
    };
  };
  const events: NonNullable<ChainFacts['liquidations']>['events'] = [];
  for (const log of logs) {
    if (log.eventName !== 'Liquidated') continue;
    const wallet = String(log.args['user']).toLowerCase() as Address;
    events.push({
      userId: userOf.get(wallet) ?? null,
      wallet,
      block: log.blockNumber.toString(),
      transactionHash: log.transactionHash.toLowerCase(),
      seized: String(log.args['collateralSeized']),
      covered: String(log.args['debtCoveredUsdc']),
      before: await snapshot(wallet, log.blockNumber - 1n),
      after: await snapshot(wallet, log.blockNumber),
    });
  }
  const rows = await sql<
    {
      id: string;
      user_id: string;
      status: string;
      transaction_hash: string;
      seized: string;
      covered: string;
      last_error: string | null;
    }[]
  >`select id::text, user_id::text, status, transaction_hash, collateral_seized_base::text as seized,
      debt_covered_usdc::text as covered, last_error from liquidations
    where chain_id = ${chain.contracts.chainId} order by id`;
  return {
    events,
    rows: rows.map((r) => ({
      id: r.id,
      userId: r.user_id,
      status: r.status,
      transactionHash: r.transaction_hash.toLowerCase(),
      seized: r.seized,
      covered: r.covered,
      lastError: r.last_error,
    })),
  };
}

/** The events that move credit (indexer/apply/effects.ts): each is applied once confirmed. */
const CREDIT_EVENTS = new Set([
  'Deposited',
  'WithdrawalRequested',
  'WithdrawalCancelled',
  'WithdrawalFinalized',
  'SpendRecorded',
  'RefundRecorded',
  'Repaid',
  'Liquidated',
  'AnswerUpdated',
]);

/** The feed's latest answer (MockAggregator). */
export const LATEST_ANSWER_ABI = [
  {
    type: 'function',
    name: 'latestAnswer',
    inputs: [],
    outputs: [{ type: 'int256' }],
    stateMutability: 'view',
  },
] as const;

/**
 * True when the indexer's cursor is at the chain's head and nothing is left to settle or to follow (a
 * liquidation in flight: `sent`, or `mined` and not yet CHAIN_CONFIRMATIONS deep). A live chain keeps
 * making blocks; the harness's node mines only when asked, so while a liquidation waits for its depth
 * this mines one block (the drain checks every 200 ms).
 */
export async function chainDrained(chain: ChainSide, sql: postgres.Sql): Promise<boolean> {
  const [waiting] = await sql<{ n: number }[]>`
    select count(*)::int as n from liquidations where status = 'mined'`;
  if ((waiting?.n ?? 0) > 0) await chain.actions.mine(1);
  const head = await chain.actions.head();
  const [cursor] = await sql<{ b: string }[]>`
    select block_number::text as b from indexer_cursors where chain_id = ${chain.contracts.chainId}`;
  if (cursor === undefined || BigInt(cursor.b) < head) return false;
  const [open] = await sql<{ n: number }[]>`
    select ((select count(*) from settlements where status <> 'confirmed')
      + (select count(*) from chain_refunds where status <> 'confirmed')
      + (select count(*) from liquidations where status in ('sent', 'mined')))::int as n`;
  return open?.n === 0;
}
