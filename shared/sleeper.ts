/** A sleep that `wake()` cuts short: a polling loop's pause that stop() must not wait out. */
export interface Sleeper {
  sleep(ms: number): Promise<void>;
  /** Ends the current sleep at once (no-op when none is running). */
  wake(): void;
}

export function createSleeper(): Sleeper {
  let wake: (() => void) | null = null;
  return {
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      }),
    wake: () => wake?.(),
  };
}
