/** Structured logs (pino). Secrets and card data are redacted by path as a second line of defence. */
import { type Logger, pino } from 'pino';

export function createLogger(level: string, name: string): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: [
        '*.secret',
        '*.secrets',
        '*.token',
        '*.authorization',
        'headers["stripe-signature"]',
        '*.number',
        '*.cvc',
      ],
      censor: '[redacted]',
    },
  });
}
export type { Logger };
