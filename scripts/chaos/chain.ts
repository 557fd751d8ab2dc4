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
import type { Address } from 'viem';
import { createSync } from '../../indexer/sync/index.ts';
import {
  type ContractsFile,
  credanaVaultAbi,
  writeContractsFile,
} from '../../shared/chain/contracts/index.ts';
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
/** The liquidator's test USDC (as scripts/dev.ts mints it): $1,000,000. */
const LIQUIDATOR_USDC_FUNDING = 1_000_000n * 10n ** 6n;

export interface ChainSide {
  node: LocalChain;
  actions: ChainActions;
  contracts: ContractsFile;
  contractsFile: string;
  weth: { token: Address; aggregator: Address };
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
      withdrawalDelayS: 3_600,
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
    return {
      node,
      actions,
      contracts,
      contractsFile,
      weth,
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

/** True when the indexer's cursor is at the chain's head and nothing is left to settle. */
export async function chainDrained(chain: ChainSide, sql: postgres.Sql): Promise<boolean> {
  const head = await chain.actions.head();
  const [cursor] = await sql<{ b: string }[]>`
    select block_number::text as b from indexer_cursors where chain_id = ${chain.contracts.chainId}`;
  if (cursor === undefined || BigInt(cursor.b) < head) return false;
  const [open] = await sql<{ n: number }[]>`
    select ((select count(*) from settlements where status <> 'confirmed')
      + (select count(*) from chain_refunds where status <> 'confirmed'))::int as n`;
  return open?.n === 0;
}
