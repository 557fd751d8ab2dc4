/**
 * The Supabase workers' public face: the bridge (Supabase → financial database and Redis) and the
 * projection sync (financial database → Supabase). `supabase/sync/main.ts` runs both.
 */
export { DECLINE_MESSAGES, declineMessage } from './decline-messages.ts';
export { applyUserState, type FinancialUserDefaults, type UserControlsState } from './financial-user.ts';
export { assertSyncLimits, defaultSyncLimits, type SyncLimits } from './limits.ts';
export { createSyncMetrics, type SyncMetrics } from './metrics.ts';
export { DEFAULT_CHAIN_EVENT_NAMES, readTruth } from './projection-read.ts';
export { createProjectionSync, type ProjectionSync } from './projection-sync.ts';
export { BRIDGE_CHANNEL, createUserBridge, type SyncLogger, type UserBridge } from './user-bridge.ts';
