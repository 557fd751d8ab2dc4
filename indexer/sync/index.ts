/**
 * Reading the chain: backfill ranges far below the head, block-by-block headers near it, and the
 * walk back to the common ancestor when the chain under us changed. Produces data only; the runtime
 * (indexer/runtime) commits it. Like Ponder's sync-historical and sync-realtime in one place.
 *
 * Two modes, by distance from the head:
 * - deep (the range ends at least `reorgDepthMax` below the head): one getLogs per range plus the
 *   last block's header for the cursor. Reorgs cannot reach there, by configuration.
 * - tail (the rest): every header is fetched first and checked to link to its parent, then getLogs,
 *   and every log's block hash must match the header of its block. Logs from another fork are thus
 *   caught at once; headers from a fork that dies later are caught by the next parent-hash check.
 */
import {
  type AbiEvent,
  type Address,
  decodeEventLog,
  type Hex,
  type Log,
  type PublicClient,
  toEventSelector,
} from 'viem';
import { credanaVaultAbi, mockAggregatorAbi } from '../../shared/chain/contracts/index.ts';
import { LIMITS } from '../../shared/chain/limits.ts';
import {
  classifyRpcError,
  RangeTooLargeError,
  ReorgTooDeepError,
  RetryableError,
} from '../../shared/chain/rpc/index.ts';
import type { BlockHeader, BlockRef, ChainLog } from '../store/index.ts';

export interface DecodedLog extends ChainLog {
  args: Record<string, unknown>;
}

export type SyncBatch =
  | {
      kind: 'blocks';
      mode: 'deep' | 'tail';
      from: bigint;
      /** The range's last block: the cursor after the commit. */
      to: BlockHeader;
      /** Headers to remember (tail: all of them; deep: the last one). */
      headers: BlockHeader[];
      logs: DecodedLog[];
      head: bigint;
    }
  | { kind: 'reorg'; ancestor: BlockRef; orphanedTip: BlockRef; depth: number; head: bigint };

export interface SyncOptions {
  client: PublicClient;
  vault: Address;
  aggregators: readonly Address[];
  reorgDepthMax: number;
  blockRangeInitial?: number;
  blockRangeMax?: number;
  logsPerRangeMax?: number;
  tailBlocksPerStepMax?: number;
  headerFetchConcurrency?: number;
}

interface Decoder {
  item: AbiEvent;
  from: 'vault' | 'aggregator';
}

/** topic0 → event item and which contract may emit it. */
function buildDecoders(): Map<Hex, Decoder> {
  const decoders = new Map<Hex, Decoder>();
  for (const item of credanaVaultAbi) {
    if (item.type === 'event')
      decoders.set(toEventSelector(item as AbiEvent), { item: item as AbiEvent, from: 'vault' });
  }
  for (const item of mockAggregatorAbi) {
    if (item.type === 'event' && item.name === 'AnswerUpdated') {
      decoders.set(toEventSelector(item as AbiEvent), { item: item as AbiEvent, from: 'aggregator' });
    }
  }
  return decoders;
}

export interface Sync {
  /** Current adaptive getLogs range (blocks). */
  readonly blockRange: number;
  head(): Promise<bigint>;
  header(number: bigint): Promise<BlockHeader | null>;
  /** Logs and the last header of a deep range; splits the range if the node refuses it. */
  fetchDeep(from: bigint, to: bigint, head: bigint): Promise<Extract<SyncBatch, { kind: 'blocks' }>>;
  /** Headers (linked to `parent`) and logs of a tail range; null when `from`'s parent is not `parent`. */
  fetchTail(
    parent: BlockRef,
    from: bigint,
    to: bigint,
    head: bigint,
  ): Promise<Extract<SyncBatch, { kind: 'blocks' }> | null>;
  /**
   * Walks back over the remembered blocks (newest first) to the newest one still canonical.
   * Throws ReorgTooDeepError when none is within `reorgDepthMax` of `tip`.
   */
  findAncestor(
    tip: BlockRef,
    remembered: readonly BlockRef[],
    head: bigint,
  ): Promise<Extract<SyncBatch, { kind: 'reorg' }>>;
  /** getLogs and decode, nothing else (the benchmark's ceiling uses exactly this). */
  getDecodedLogs(from: bigint, to: bigint): Promise<DecodedLog[]>;
  setAggregators(aggregators: readonly Address[]): void;
}

export function createSync(options: SyncOptions): Sync {
  const client = options.client;
  const decoders = buildDecoders();
  const vault = options.vault.toLowerCase() as Address;
  let aggregators = new Set(options.aggregators.map((a) => a.toLowerCase() as Address));
  let addresses: Address[] = [vault, ...aggregators];
  const rangeMax = Math.min(options.blockRangeMax ?? LIMITS.blockRangeMax, LIMITS.blockRangeMax);
  const logsMax = options.logsPerRangeMax ?? LIMITS.logsPerRangeMax;
  const tailMax = options.tailBlocksPerStepMax ?? LIMITS.tailBlocksPerStepMax;
  const concurrency = options.headerFetchConcurrency ?? LIMITS.headerFetchConcurrency;
  let blockRange = Math.min(options.blockRangeInitial ?? LIMITS.blockRangeInitial, rangeMax);

  const getDecodedLogs = async (from: bigint, to: bigint): Promise<DecodedLog[]> => {
    const logs = await client.getLogs({ address: addresses, fromBlock: from, toBlock: to });
    const out: DecodedLog[] = [];
    for (const log of logs) {
      if (log.removed) continue;
      const decoded = decodeLog(decoders, vault, aggregators, log);
      if (decoded !== null) out.push(decoded);
    }
    return out;
  };

  /** getLogs over [from, to], halving on "range too large" until it fits (or one block fails). */
  const getLogsSplitting = async (from: bigint, to: bigint): Promise<DecodedLog[]> => {
    try {
      return await getDecodedLogs(from, to);
    } catch (error) {
      if (!(classifyRpcError(error) instanceof RangeTooLargeError) || from === to) throw error;
      blockRange = Math.max(LIMITS.blockRangeMin, Math.floor(blockRange / 2));
      const mid = from + (to - from) / 2n;
      const left = await getLogsSplitting(from, mid);
      const right = await getLogsSplitting(mid + 1n, to);
      return left.concat(right);
    }
  };

  const adapt = (logCount: number) => {
    if (logCount > logsMax) blockRange = Math.max(LIMITS.blockRangeMin, Math.floor(blockRange / 2));
    else if (logCount < logsMax / 4) blockRange = Math.min(rangeMax, blockRange * 2);
  };

  const header = (number: bigint): Promise<BlockHeader | null> => readHeader(client, number);

  return {
    get blockRange() {
      return blockRange;
    },
    head: () => client.getBlockNumber({ cacheTime: 0 }),
    header,
    getDecodedLogs,
    setAggregators(next) {
      aggregators = new Set(next.map((a) => a.toLowerCase() as Address));
      addresses = [vault, ...aggregators];
    },

    async fetchDeep(from, to, head) {
      const [logs, last] = await Promise.all([getLogsSplitting(from, to), header(to)]);
      if (last === null) throw new RetryableError('block_missing', `block ${to} not found`);
      adapt(logs.length);
      return { kind: 'blocks', mode: 'deep', from, to: last, headers: [last], logs, head };
    },

    async fetchTail(parent, from, to, head) {
      const last = to - from + 1n > BigInt(tailMax) ? from + BigInt(tailMax) - 1n : to;
      const numbers: bigint[] = [];
      for (let n = from; n <= last; n++) numbers.push(n);
      const headers: BlockHeader[] = [];
      for (let i = 0; i < numbers.length; i += concurrency) {
        const chunk = await Promise.all(numbers.slice(i, i + concurrency).map((n) => header(n)));
        for (const h of chunk) {
          if (h === null)
            throw new RetryableError('block_missing', 'a block vanished while reading the tail');
          headers.push(h);
        }
      }
      const first = headers[0];
      if (first === undefined) throw new RetryableError('block_missing', 'empty tail range');
      if (first.parentHash !== parent.hash) return null;
      for (let i = 1; i < headers.length; i++) {
        if (headers[i]?.parentHash !== headers[i - 1]?.hash) {
          throw new RetryableError('range_inconsistent', 'headers changed fork while reading the tail');
        }
      }
      const logs = await getDecodedLogs(from, last);
      const hashByNumber = new Map(headers.map((h) => [h.number, h.hash]));
      for (const log of logs) {
        if (hashByNumber.get(log.blockNumber) !== log.blockHash) {
          throw new RetryableError('range_inconsistent', 'logs and headers come from different forks');
        }
      }
      const tip = headers[headers.length - 1] as BlockHeader;
      return { kind: 'blocks', mode: 'tail', from, to: tip, headers, logs, head };
    },

    findAncestor: (tip, remembered, head) =>
      findAncestor(header, options.reorgDepthMax, tip, remembered, head),
  };
}

/** A log decoded, or null when no known event of the contract that emitted it (or not yet mined). */
function decodeLog(
  decoders: ReadonlyMap<Hex, Decoder>,
  vault: Address,
  aggregators: ReadonlySet<Address>,
  log: Log,
): DecodedLog | null {
  const topic0 = log.topics[0];
  if (topic0 === undefined) return null;
  const decoder = decoders.get(topic0);
  if (decoder === undefined) return null;
  const address = log.address.toLowerCase() as Address;
  // An event counts only from the contract that may emit it (no spoofing by a look-alike topic).
  if (decoder.from === 'vault' ? address !== vault : !aggregators.has(address)) return null;
  const decoded = decodeEventLog({ abi: [decoder.item], data: log.data, topics: log.topics, strict: true });
  if (
    log.blockNumber === null ||
    log.blockHash === null ||
    log.logIndex === null ||
    log.transactionHash === null
  ) {
    return null;
  }
  return {
    blockNumber: log.blockNumber,
    blockHash: log.blockHash,
    logIndex: log.logIndex,
    transactionHash: log.transactionHash,
    address,
    eventName: decoded.eventName ?? decoder.item.name,
    args: (decoded.args ?? {}) as Record<string, unknown>,
  };
}

/** The header of block `number`, or null when the node has no such block. */
async function readHeader(client: PublicClient, number: bigint): Promise<BlockHeader | null> {
  const block = await client.getBlock({ blockNumber: number }).catch((error: unknown) => {
    // A block above the head (after a reorg to a shorter chain) is "not found", not a failure.
    if (error instanceof Error && error.name === 'BlockNotFoundError') return null;
    throw error;
  });
  if (block === null || block.hash === null || block.number === null) return null;
  return {
    number: block.number,
    hash: block.hash,
    parentHash: block.parentHash,
    timestamp: block.timestamp,
  };
}

/** `Sync.findAncestor`: the newest remembered block still canonical, within `reorgDepthMax` of `tip`. */
async function findAncestor(
  header: (number: bigint) => Promise<BlockHeader | null>,
  reorgDepthMax: number,
  tip: BlockRef,
  remembered: readonly BlockRef[],
  head: bigint,
): Promise<Extract<SyncBatch, { kind: 'reorg' }>> {
  const floor = tip.number - BigInt(reorgDepthMax);
  for (const block of remembered) {
    if (block.number < floor) break;
    if (block.number > head) continue;
    const canonical = await header(block.number);
    if (canonical !== null && canonical.hash === block.hash) {
      return {
        kind: 'reorg',
        ancestor: block,
        orphanedTip: tip,
        depth: Number(tip.number - block.number),
        head,
      };
    }
  }
  throw new ReorgTooDeepError(
    { cursorBlock: tip.number, reorgDepthMax, checkedDownTo: floor },
    `reorg deeper than ${reorgDepthMax} blocks below block ${tip.number} (no remembered block ` +
      `at or above ${floor} is canonical); the indexer stops instead of guessing`,
  );
}
