/** The hot path's logger is every service's: shared/observability/logger.ts. */
export { createLogger, type Logger } from '../../shared/observability/logger.ts';
