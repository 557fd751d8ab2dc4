/** Logs, metrics and health of every Credana process: one logger factory, one metrics setup. */
export * from './health.ts';
export * from './internal-app.ts';
export * from './logger.ts';
export * from './metrics.ts';
export * from './metrics-access.ts';
