/**
 * A token bucket in front of the node: `take()` resolves when a request may go out. Requests wait in
 * arrival order; the queue itself is bounded by the caller's concurrency.
 */
export interface RateLimiterOptions {
  requestsPerS: number;
  burst: number;
  now?: () => number;
}

export interface RateLimiter {
  take(): Promise<void>;
  /** Requests that had to wait (for metrics and tests). */
  readonly waited: number;
}

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const now = options.now ?? (() => performance.now());
  const perMs = options.requestsPerS / 1_000;
  let tokens = options.burst;
  let last = now();
  let waited = 0;
  let tail: Promise<void> = Promise.resolve();

  const refill = () => {
    const t = now();
    tokens = Math.min(options.burst, tokens + (t - last) * perMs);
    last = t;
  };

  return {
    take() {
      // Chain on the previous waiter so tokens are handed out in arrival order.
      const turn = tail.then(async () => {
        refill();
        if (tokens < 1) {
          waited++;
          const waitMs = Math.ceil((1 - tokens) / perMs);
          await new Promise((resolve) => setTimeout(resolve, waitMs));
          refill();
        }
        tokens -= 1;
      });
      tail = turn;
      return turn;
    },
    get waited() {
      return waited;
    },
  };
}
