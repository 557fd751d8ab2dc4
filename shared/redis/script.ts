/**
 * Lua scripts run by their SHA1 (EVALSHA), with the script's text sent only when Redis answers
 * NOSCRIPT (a new or restarted Redis), which also loads it for the next call.
 *
 * `loadScripts` puts scripts into Redis's cache ahead of their first call (a service does it before it
 * reports ready), so the first calls after a start do not each pay for a NOSCRIPT reply and the text.
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

/**
 * SCRIPT LOAD of each of `scripts`, so their first calls run by SHA (one round trip, no text on the
 * wire). Redis keeps them until it restarts or its script cache is flushed; runScript recovers from
 * NOSCRIPT after that.
 */
export async function loadScripts(redis: Redis, scripts: readonly LuaScript[]): Promise<void> {
  await Promise.all(scripts.map((script) => redis.script('LOAD', script.lua)));
}
