/**
 * The one logger factory of every Credana process: pino, JSON lines on stdout, each line carrying the
 * service's name. Secrets and card data are redacted by path as a second line of defence (the first
 * is not logging them): a private key, a token or a card number handed to the logger by mistake comes
 * out as "[redacted]", at the top level or one level down.
 */
import { hostname } from 'node:os';
import { type Logger, pino } from 'pino';

/** Field names never written as they are, wherever a log call puts them (top level or one down). */
export const REDACTED_FIELDS = [
  'secret',
  'secrets',
  'token',
  'authorization',
  'password',
  'privateKey',
  'private_key',
  'apiKey',
  'mnemonic',
  'cvc',
] as const;

export const REDACTED_PATHS: readonly string[] = [
  ...REDACTED_FIELDS,
  ...REDACTED_FIELDS.map((field) => `*.${field}`),
  // A card object's number; a top-level `number` is a block number and stays readable.
  '*.number',
  'headers["stripe-signature"]',
  '*.headers["stripe-signature"]',
  '*.headers.authorization',
];

/**
 * `createLogger(config.LOG_LEVEL, 'settlement')`: a pino logger whose every line says
 * `"service":"settlement"`, with the redaction above. `destination` is for tests (default stdout).
 */
export function createLogger(level: string, service: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service, pid: process.pid, hostname: hostname() },
    redact: { paths: [...REDACTED_PATHS], censor: '[redacted]' },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
export type { Logger };
