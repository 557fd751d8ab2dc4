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

/**
 * Runs `script` like runScript and, in the same pipeline (one round trip), `WAIT replicas timeoutMs`:
 * how many replicas acknowledged every write this connection made up to and including the script's.
 * On a Redis Cluster the pipeline goes to the node of the script's keys' slot (ioredis routes a
 * pipeline by its keyed commands; WAIT has none), so the WAIT counts that node's replicas. A WAIT that
 * fails (e.g. sent to a replica) counts as 0 acknowledgements. A script error is thrown as runScript's.
 */
export async function runScriptAndWait<T>(
  redis: Redis,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
  replicas: number,
  timeoutMs: number,
): Promise<{ reply: T; replicasAcked: number }> {
  const send = async (withText: boolean) => {
    const pipeline = redis.pipeline();
    if (withText) pipeline.eval(script.lua, keys.length, ...keys, ...args);
    else pipeline.evalsha(script.sha, keys.length, ...keys, ...args);
    pipeline.call('WAIT', replicas, timeoutMs);
    const results = await pipeline.exec();
    if (results === null || results.length !== 2) throw new Error('the pipeline was discarded');
    return results as [[Error | null, unknown], [Error | null, unknown]];
  };
  let [[scriptError, reply], [waitError, acked]] = await send(false);
  if (scriptError !== null && String(scriptError.message).startsWith('NOSCRIPT')) {
    [[scriptError, reply], [waitError, acked]] = await send(true);
  }
  if (scriptError !== null) throw scriptError;
  return { reply: reply as T, replicasAcked: waitError === null ? Number(acked) : 0 };
}
