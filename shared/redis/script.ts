/**
 * Lua scripts run by their SHA1 (EVALSHA), with the script's text sent only when Redis answers
 * NOSCRIPT (a new or restarted Redis), which also loads it for the next call.
 *
 * Why not ioredis's `defineCommand`: with auto-pipelining on, its script command cannot tell which
 * socket already has the script and sends the whole text (EVAL) on every call — seen in an allocation
 * profile of the hot path as 4 KB per decision, and Redis hashing the text each time.
 */
import { createHash } from 'node:crypto';
import type { Redis } from './client.ts';

export interface LuaScript {
  readonly lua: string;
  readonly sha: string;
}

export function luaScript(lua: string): LuaScript {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') };
}

/** Runs `script` over `keys` (all in one hash slot) with `args`; one round trip once Redis has it. */
export async function runScript<T>(
  redis: Redis,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<T> {
  try {
    return (await redis.evalsha(script.sha, keys.length, ...keys, ...args)) as T;
  } catch (error) {
    if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
    return (await redis.eval(script.lua, keys.length, ...keys, ...args)) as T;
  }
}
