/**
 * Errors sorted by what the caller should do (Ponder's RetryableError / NonRetryableUserError).
 * Retry loops switch on the class or the stable `code`, never on message text.
 */
import { HttpRequestError, ResponseBodyTooLargeError, RpcError, RpcRequestError, TimeoutError } from 'viem';

export abstract class IndexerError extends Error {
  abstract readonly code: string;
  abstract readonly retryable: boolean;
}

/** A transient failure (node down, timeout, rate limit, 5xx): try again later. */
export class RetryableError extends IndexerError {
  readonly retryable = true;
  constructor(
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Retrying cannot help (bad request, reverted call, a state the indexer must not guess about). */
export class NonRetryableError extends IndexerError {
  readonly retryable = false;
  constructor(
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * The node refused a getLogs range as too large or too many results (or the answer was over our size
 * limit): retry with a smaller range. The RPC layer does not repeat the same call; sync splits it.
 */
export class RangeTooLargeError extends RetryableError {
  constructor(message: string, options?: ErrorOptions) {
    super('rpc_range_too_large', message, options);
  }
}

/**
 * A reorg deeper than the configured limit (or below the blocks the indexer still remembers). The
 * indexer stops instead of guessing which history is right; an operator must decide.
 */
export class ReorgTooDeepError extends NonRetryableError {
  constructor(
    readonly detail: { cursorBlock: bigint; reorgDepthMax: number; checkedDownTo: bigint },
    message: string,
  ) {
    super('reorg_too_deep', message);
  }
}

// Providers' words for "this getLogs range is too big". A bare "limit exceeded" (-32005) is a rate
// limit, retried as is.
const RANGE_HINTS = [
  'block range',
  'too many results',
  'query returned more than',
  'response size',
  'range too large',
];

/** Walks an error's `cause` chain (viem wraps transport errors, and wraps ours in turn). */
function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 10; depth++) {
    chain.push(current);
    current = (current as { cause?: unknown }).cause;
  }
  return chain;
}

/**
 * Maps anything an RPC call threw to one of the classes above. JSON-RPC error codes and HTTP statuses
 * decide; the message is consulted only to recognise a provider's "range too large" answer, which
 * providers signal in words rather than in a standard code.
 */
export function classifyRpcError(error: unknown): IndexerError {
  const chain = causes(error);
  const ours = chain.find((e): e is IndexerError => e instanceof IndexerError);
  if (ours !== undefined) return ours;
  const cause = error instanceof Error ? error : new Error(String(error));
  // Our client refuses bodies over its size limit: the range held too many logs.
  if (chain.some((e) => e instanceof ResponseBodyTooLargeError))
    return new RangeTooLargeError(cause.message, { cause });
  if (chain.some((e) => e instanceof TimeoutError)) {
    return new RetryableError('rpc_timeout', cause.message, { cause });
  }
  const http = chain.find((e): e is HttpRequestError => e instanceof HttpRequestError);
  if (http !== undefined) {
    const status = http.status;
    if (status === undefined || status === 429 || status === 408 || status >= 500) {
      return new RetryableError(`rpc_http_${status ?? 'network'}`, cause.message, { cause });
    }
    return new NonRetryableError(`rpc_http_${status}`, cause.message, { cause });
  }
  const rpc = chain.find(
    (e): e is RpcError | RpcRequestError => e instanceof RpcError || e instanceof RpcRequestError,
  );
  if (rpc !== undefined) {
    const text = `${rpc.details ?? ''} ${rpc.shortMessage}`.toLowerCase();
    if (RANGE_HINTS.some((hint) => text.includes(hint)))
      return new RangeTooLargeError(cause.message, { cause });
    // A call that reverted (EIP-1474 code 3, or revert data) fails the same way every time.
    const data = (rpc as { data?: unknown }).data;
    if (rpc.code === 3 || (typeof data === 'string' && data.length > 2)) {
      return new NonRetryableError('rpc_reverted', cause.message, { cause });
    }
    // -32005 limit exceeded, -32603 internal, -32000 server error (nodes use it for "header not
    // found" while catching up), -32002/-32004 resource unavailable / not supported yet.
    if ([-32005, -32603, -32000, -32002, -32004, -1].includes(rpc.code)) {
      return new RetryableError(`rpc_code_${rpc.code}`, cause.message, { cause });
    }
    return new NonRetryableError(`rpc_code_${rpc.code}`, cause.message, { cause });
  }
  // fetch failures (connection refused or reset) surface as TypeError or a plain Error: transient.
  return new RetryableError('rpc_unknown', cause.message, { cause });
}
