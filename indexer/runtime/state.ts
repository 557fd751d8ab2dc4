/**
 * The indexer runtime's state, shared by its pieces: where it stands (status, cursor), what it applies
 * with (ctx), and whether it is stopping. One object per indexer; only the runtime's modules mutate it.
 */
import type { ApplyContext } from '../apply/index.ts';
import type { BlockRef } from '../store/index.ts';

export type IndexerStatus = 'new' | 'running' | 'halted' | 'stopped';

export interface StepResult {
  kind: 'blocks' | 'reorg' | 'idle';
  cursor: BlockRef;
  head: bigint;
}

export interface RuntimeState {
  status: IndexerStatus;
  cursor: BlockRef | null;
  ctx: ApplyContext | null;
  stopping: boolean;
}

export function createRuntimeState(): RuntimeState {
  return { status: 'new', cursor: null, ctx: null, stopping: false };
}

/** The apply context; it is a programmer error to ask before init(). */
export function contextOf(state: RuntimeState): ApplyContext {
  if (state.ctx === null) throw new Error('indexer not initialised');
  return state.ctx;
}

/** The cursor; it is a programmer error to ask before init(). */
export function cursorOf(state: RuntimeState): BlockRef {
  if (state.cursor === null) throw new Error('indexer not initialised');
  return state.cursor;
}
