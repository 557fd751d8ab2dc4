// Proves the RPC layer's error classes, bounded retries and rate limit without a node: viem's own
// error types are built directly, and time is measured on real timers.
import {
  HttpRequestError,
  InternalRpcError,
  InvalidParamsRpcError,
  ResponseBodyTooLargeError,
  RpcRequestError,
  TimeoutError,
} from 'viem';
import { describe, expect, it, vi } from 'vitest';
import {
  classifyRpcError,
  createRateLimiter,
  NonRetryableError,
  RangeTooLargeError,
  RetryableError,
  withRetries,
} from './index.ts';

const http = (status: number) => new HttpRequestError({ url: 'http://node', status, body: {} });

describe('classifyRpcError', () => {
  it('retries transient failures and refuses the rest', () => {
    expect(classifyRpcError(http(503))).toBeInstanceOf(RetryableError);
    expect(classifyRpcError(http(429))).toBeInstanceOf(RetryableError);
    expect(classifyRpcError(new HttpRequestError({ url: 'http://node' }))).toBeInstanceOf(RetryableError);
    expect(classifyRpcError(new TimeoutError({ body: {}, url: 'http://node' }))).toMatchObject({
      code: 'rpc_timeout',
    });
    expect(classifyRpcError(new InternalRpcError(new Error('boom')))).toBeInstanceOf(RetryableError);
    expect(classifyRpcError(new TypeError('fetch failed'))).toBeInstanceOf(RetryableError);
    expect(classifyRpcError(http(400))).toBeInstanceOf(NonRetryableError);
    expect(classifyRpcError(new InvalidParamsRpcError(new Error('bad')))).toBeInstanceOf(NonRetryableError);
  });

  it('recognises a range the node (or our size limit) refuses, even wrapped by viem', () => {
    const tooMany = new RpcRequestError({
      body: {},
      url: 'http://node',
      error: { code: -32005, message: 'query returned more than 10000 results' },
    });
    expect(classifyRpcError(tooMany)).toBeInstanceOf(RangeTooLargeError);
    const wrapped = new Error('outer', { cause: new ResponseBodyTooLargeError({ maxSize: 1, size: 2 }) });
    expect(classifyRpcError(wrapped)).toBeInstanceOf(RangeTooLargeError);
  });

  it('finds our own error inside viem’s wrapping', () => {
    const ours = new NonRetryableError('reorg_too_deep', 'deep');
    expect(classifyRpcError(new Error('wrapper', { cause: ours }))).toBe(ours);
  });
});

describe('withRetries', () => {
  const fast = { retriesMax: 3, delayMsBase: 1, delayMsMax: 2 };
  it('retries a retryable failure a bounded number of times', async () => {
    let calls = 0;
    const failing = withRetries(async () => {
      calls++;
      throw http(503);
    }, fast);
    await expect(failing).rejects.toBeInstanceOf(RetryableError);
    expect(calls).toBe(4);
  });
  it('succeeds once the failure passes', async () => {
    let calls = 0;
    const value = await withRetries(async () => {
      calls++;
      if (calls < 3) throw http(502);
      return 'ok';
    }, fast);
    expect(value).toBe('ok');
    expect(calls).toBe(3);
  });
  it('does not repeat a call that cannot succeed (bad request, range too large)', async () => {
    for (const error of [http(400), new RangeTooLargeError('too big')]) {
      let calls = 0;
      await expect(
        withRetries(async () => {
          calls++;
          throw error;
        }, fast),
      ).rejects.toBeDefined();
      expect(calls).toBe(1);
    }
  });
});

describe('createRateLimiter', () => {
  it('lets a burst through and paces the rest', async () => {
    const limiter = createRateLimiter({ requestsPerS: 200, burst: 5 });
    const started = performance.now();
    await Promise.all(Array.from({ length: 25 }, () => limiter.take()));
    const elapsedMs = performance.now() - started;
    // 5 at once, then 20 at 200/s: at least ~100 ms (a busy machine's late timers only add to it, so
    // there is no upper bound here: the test's own timeout catches a limiter that never lets go).
    expect(elapsedMs).toBeGreaterThanOrEqual(90);
    expect(limiter.waited).toBeGreaterThan(0);
  });

  it('paces exactly on a clock that only moves when it waits', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'performance'] });
    try {
      const limiter = createRateLimiter({ requestsPerS: 200, burst: 5 });
      const started = performance.now();
      const all = Promise.all(Array.from({ length: 25 }, () => limiter.take()));
      await vi.runAllTimersAsync();
      await all;
      // The burst of 5 free, then each of the other 20 waits its 5 ms.
      expect(performance.now() - started).toBe(100);
      expect(limiter.waited).toBe(20);
    } finally {
      vi.useRealTimers();
    }
  });
});
