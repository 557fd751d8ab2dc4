/**
 * The indexer's view of the node: a viem public client whose every request passes a token-bucket rate
 * limiter and a bounded retry loop with exponential backoff and jitter. Retries switch on the error's
 * class (see errors.ts); a non-retryable error or the last retryable one is thrown to the caller.
 */
import { createPublicClient, custom, http, type PublicClient } from 'viem';
import { LIMITS } from '../limits.ts';
import { classifyRpcError, type IndexerError, RangeTooLargeError } from './errors.ts';
import { createRateLimiter, type RateLimiter } from './rate-limit.ts';

export * from './errors.ts';
export { createRateLimiter, type RateLimiter } from './rate-limit.ts';

export interface RpcOptions {
  url: string;
  chainId: number;
  timeoutMs?: number;
  retriesMax?: number;
  retryDelayMsBase?: number;
  retryDelayMsMax?: number;
  requestsPerSMax?: number;
  burstMax?: number;
  /** Called before each retry (metrics, logs). */
  onRetry?: (info: { method: string; attempt: number; error: IndexerError; delayMs: number }) => void;
}

export interface Rpc {
  client: PublicClient;
  limiter: RateLimiter;
  stats: { requests: number; retries: number; failures: number };
}

/** Runs `fn` with bounded retries on retryable errors. Exported for callers with their own loops. */
export async function withRetries<T>(
  fn: () => Promise<T>,
  options: {
    retriesMax: number;
    delayMsBase: number;
    delayMsMax: number;
    onRetry?: (attempt: number, error: IndexerError, delayMs: number) => void;
  },
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (raw) {
      const error = classifyRpcError(raw);
      // The same call would fail the same way: a smaller range is the caller's decision.
      if (!error.retryable || error instanceof RangeTooLargeError || attempt >= options.retriesMax)
        throw error;
      const ceiling = Math.min(options.delayMsMax, options.delayMsBase * 2 ** attempt);
      const delayMs = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
      options.onRetry?.(attempt + 1, error, delayMs);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

export function createRpc(options: RpcOptions): Rpc {
  const limiter = createRateLimiter({
    requestsPerS: options.requestsPerSMax ?? LIMITS.rpcRequestsPerSMax,
    burst: options.burstMax ?? LIMITS.rpcBurstMax,
  });
  const stats = { requests: 0, retries: 0, failures: 0 };
  // viem's own retries are off: ours classify errors and are bounded in one place.
  const inner = http(options.url, { retryCount: 0, timeout: options.timeoutMs ?? LIMITS.rpcTimeoutMs })({
    retryCount: 0,
  });
  const transport = custom(
    {
      async request({ method, params }: { method: string; params?: unknown }) {
        try {
          return await withRetries(
            async () => {
              await limiter.take();
              stats.requests++;
              return inner.request({ method, params } as Parameters<typeof inner.request>[0]);
            },
            {
              retriesMax: options.retriesMax ?? LIMITS.rpcRetriesMax,
              delayMsBase: options.retryDelayMsBase ?? LIMITS.rpcRetryDelayMsBase,
              delayMsMax: options.retryDelayMsMax ?? LIMITS.rpcRetryDelayMsMax,
              onRetry: (attempt, error, delayMs) => {
                stats.retries++;
                options.onRetry?.({ method, attempt, error, delayMs });
              },
            },
          );
        } catch (error) {
          stats.failures++;
          throw error;
        }
      },
    },
    { retryCount: 0 },
  );
  const client = createPublicClient({
    chain: {
      id: options.chainId,
      name: `chain-${options.chainId}`,
      nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
      rpcUrls: { default: { http: [options.url] } },
    },
    transport,
    pollingInterval: 250,
  });
  return { client, limiter, stats };
}
