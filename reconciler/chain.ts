/**
 * Job `chain`: the vault's on-chain state for each user equals the indexed positions and debt.
 *
 * For every user with a wallet on the vault's chain (in user id order, `usersPerBatch` at a time), the
 * vault is read with viem — `collateralOf(wallet, token)`, `pendingWithdrawalOf(wallet, token)`,
 * `debtOf(wallet)` for every wallet and asset — batched through multicall (Multicall3 where the chain
 * has it, else viem's deployless multicall, so the local hardhat node needs nothing deployed). A user's
 * wallets are summed, as the indexer folds them into one position per user and asset.
 *
 * The chain is read at the indexer's cursor block (indexer_cursors), so both sides describe the same
 * block; without a cursor, at the latest block. Deposits wait for confirmations before the indexer
 * applies them ("credit grows slow"): where the chain shows more collateral than the index and the user
 * has indexed events not yet applied, the difference is counted as awaiting confirmations, not reported.
 * Reports only: the index is rebuilt by re-indexing, never patched by reconciliation.
 */
import type { Abi, Address, PublicClient } from 'viem';
import { credanaVaultAbi } from '../shared/chain/contracts/abis.ts';
import type { ContractsFile } from '../shared/chain/contracts/index.ts';
import { limits } from './limits.ts';
import { type Finding, type JobContext, type JobOutcome, NIL_UUID } from './types.ts';

export interface ChainJobOptions {
  client: PublicClient;
  contracts: Pick<ContractsFile, 'chainId' | 'vault' | 'assets'>;
  usersPerBatch?: number;
  usersPerRunMax?: number;
  callsPerMulticall?: number;
  runTimeMaxMs?: number;
}

interface Read {
  userId: string;
  field: 'collateral' | 'pendingWithdrawal' | 'debt';
  assetId: string | null;
}

export function chainJob(options: ChainJobOptions) {
  const { client, contracts } = options;
  const batch = options.usersPerBatch ?? limits.usersPerBatch;
  const perRunMax = options.usersPerRunMax ?? limits.usersPerRunMax;
  const callsPerMulticall = options.callsPerMulticall ?? limits.chainCallsPerMulticall;
  const timeMaxMs = options.runTimeMaxMs ?? limits.runTimeMaxMs;
  const vault = contracts.vault as Address;
  const cursorId = `vault:${contracts.chainId}:${vault.toLowerCase()}`;

  return async (ctx: JobContext): Promise<JobOutcome> => {
    const { sql, now } = ctx;
    const startedMs = now();
    const findings: Finding[] = [];
    let checked = 0;
    let after = ctx.cursor ?? NIL_UUID;
    const [cursor] = await sql<{ block_number: string }[]>`
      select block_number::text from indexer_cursors where id = ${cursorId}`;
    const blockNumber = cursor === undefined ? await client.getBlockNumber() : BigInt(cursor.block_number);
    const multicallAddress = client.chain?.contracts?.multicall3?.address;

    for (;;) {
      if (checked >= perRunMax || now() - startedMs >= timeMaxMs)
        return { checked, findings, repairs: 0, cursor: after };
      const wallets = await sql<{ user_id: string; address: string }[]>`
        select w.user_id::text, w.address from wallets w
        where w.chain_id = ${contracts.chainId} and w.user_id in (
          select distinct user_id from wallets where chain_id = ${contracts.chainId} and user_id > ${after}::uuid
          order by user_id limit ${Math.min(batch, perRunMax - checked)})
        order by w.user_id, w.address`;
      if (wallets.length === 0) return { checked, findings, repairs: 0, cursor: null };
      const userIds = [...new Set(wallets.map((w) => w.user_id))];

      const reads: Read[] = [];
      const calls: { address: Address; abi: Abi; functionName: string; args: readonly unknown[] }[] = [];
      for (const w of wallets) {
        const wallet = w.address as Address;
        for (const asset of contracts.assets) {
          reads.push({ userId: w.user_id, field: 'collateral', assetId: asset.assetId });
          calls.push({
            address: vault,
            abi: credanaVaultAbi,
            functionName: 'collateralOf',
            args: [wallet, asset.token],
          });
          reads.push({ userId: w.user_id, field: 'pendingWithdrawal', assetId: asset.assetId });
          calls.push({
            address: vault,
            abi: credanaVaultAbi,
            functionName: 'pendingWithdrawalOf',
            args: [wallet, asset.token],
          });
        }
        reads.push({ userId: w.user_id, field: 'debt', assetId: null });
        calls.push({ address: vault, abi: credanaVaultAbi, functionName: 'debtOf', args: [wallet] });
      }
      const results = (await client.multicall({
        contracts: calls,
        allowFailure: false,
        blockNumber,
        batchSize: callsPerMulticall * 64,
        ...(multicallAddress === undefined ? { deployless: true } : { multicallAddress }),
      } as Parameters<PublicClient['multicall']>[0])) as unknown as (bigint | readonly [bigint, bigint])[];

      const onchain = new Map<string, bigint>();
      results.forEach((value, i) => {
        const read = reads[i]!;
        const key = `${read.userId}|${read.field}|${read.assetId ?? ''}`;
        // pendingWithdrawalOf returns (amount, readyAt); the others a single uint256.
        const amount = typeof value === 'bigint' ? value : value[0];
        onchain.set(key, (onchain.get(key) ?? 0n) + amount);
      });

      const [positions, accounts, unapplied] = await Promise.all([
        sql<{ user_id: string; asset_id: string; c: string; w: string }[]>`
          select user_id::text, asset_id, collateral_base::text as c, pending_withdrawal_base::text as w
          from positions where user_id = any(${userIds}::uuid[])`,
        sql<{ user_id: string; debt: string }[]>`
          select user_id::text, debt_onchain_usdc::text as debt from credit_accounts where user_id = any(${userIds}::uuid[])`,
        sql<{ user_id: string }[]>`
          select distinct user_id::text from chain_events
          where user_id = any(${userIds}::uuid[]) and applied_at is null and block_number <= ${blockNumber.toString()}`,
      ]);
      const indexed = new Map<string, bigint>();
      for (const p of positions) {
        indexed.set(`${p.user_id}|collateral|${p.asset_id}`, BigInt(p.c));
        indexed.set(`${p.user_id}|pendingWithdrawal|${p.asset_id}`, BigInt(p.w));
      }
      for (const a of accounts) indexed.set(`${a.user_id}|debt|`, BigInt(a.debt));
      const awaiting = new Set(unapplied.map((u) => u.user_id));

      for (const key of [...onchain.keys()].sort()) {
        const chainValue = onchain.get(key) ?? 0n;
        const indexedValue = indexed.get(key) ?? 0n;
        if (chainValue === indexedValue) continue;
        const [userId, field, assetId] = key.split('|') as [string, Read['field'], string];
        if (field === 'collateral' && chainValue > indexedValue && awaiting.has(userId)) continue;
        findings.push({
          kind:
            field === 'debt'
              ? 'chain_debt_mismatch'
              : `chain_${field === 'collateral' ? 'collateral' : 'pending_withdrawal'}_mismatch`,
          userId,
          assetId: assetId === '' ? null : assetId,
          onchain: chainValue.toString(),
          indexed: indexedValue.toString(),
          blockNumber: blockNumber.toString(),
        });
      }
      checked += userIds.length;
      after = userIds[userIds.length - 1]!;
      await ctx.checkpoint({ cursor: after, checked });
    }
  };
}
