import { RetryableError } from './errors.ts';

/** A deadline on a promise: the answer goes out on time whatever the work is still doing. */
export class DeadlineError extends RetryableError {
  override name = 'DeadlineError';
  constructor(message: string) {
    super('deadline', message);
  }
}

/** Rejects when `promise` has not settled within `ms`; the work itself may still finish later. */
export function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  if (ms <= 0) {
    promise.catch(() => {});
    return Promise.reject(new DeadlineError('no time left'));
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DeadlineError(`not done in ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
