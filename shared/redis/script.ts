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
 *
 * On a Redis Cluster whose slots are being moved (docs/redis-layout.md, "Resharding"), a script's keys
 * may be on the old node, the new one or split between them. The cluster client follows `MOVED` (the
 * slot has moved: it re-reads the slot map) and `ASK` (the slot is moving: `ASKING` + the command on the
 * new node) per command, up to its `maxRedirections` — but only for a command sent on its own: in an
 * auto-pipelined batch that mixes them with other replies ioredis hands redirects back as errors
 * (redis/ioredis#2075), so a cluster client that runs scripts under a budget must not auto-pipeline
 * (hot-path/server.ts). `TRYAGAIN` (the script's keys are split between the two nodes mid-move, or it
 * would create a key there) cannot be followed, only waited out: with a `RedirectPolicy`, runScript
 * resends after a short wait while its deadline allows, then throws the redirect (`clusterRedirectOf`
 * tells the caller it was one, not a Redis failure).
 */
import { createHash } from 'node:crypto';
import { replyCode } from '../errors.ts';
import { isCluster, type Redis } from './client.ts';

export interface LuaScript {
  readonly lua: string;
  readonly sha: string;
}

export function luaScript(lua: string): LuaScript {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') };
}

/** What a cluster answered instead of running a command: the slot moved, is moving, or is split mid-move. */
export type ClusterRedirect = 'moved' | 'ask' | 'tryagain';

const TOO_MANY_REDIRECTIONS = 'Too many Cluster redirections. Last error: ';

/**
 * The cluster redirect an error is, or null: a `MOVED`/`ASK`/`TRYAGAIN` reply (by its reply code), also
 * as the last error of ioredis's "Too many Cluster redirections" (it followed `maxRedirections` of them
 * and gave up). That one error is read from its text: ioredis 6 builds it as a bare Error whose message
 * is its fixed prefix and the last reply, with no class, code or cause to read instead.
 */
export function clusterRedirectOf(error: unknown): ClusterRedirect | null {
  if (!(error instanceof Error)) return null;
  let code = replyCode(error);
  if (code === null && error.message.startsWith(TOO_MANY_REDIRECTIONS)) {
    const last = error.message.slice(TOO_MANY_REDIRECTIONS.length).replace(/^ReplyError: /, '');
    code = /^[A-Z]+/.exec(last)?.[0] ?? null;
  }
  if (code === 'MOVED') return 'moved';
  if (code === 'ASK') return 'ask';
  if (code === 'TRYAGAIN') return 'tryagain';
  return null;
}

/** How runScript retries a script the cluster redirected back to it (see the file's header). */
export interface RedirectPolicy {
  /** Resends after a redirect reached the caller (beyond those the cluster client followed itself). */
  retriesMax: number;
  /** Wait before resending after TRYAGAIN (a MOVED or ASK is resent at once). */
  tryAgainDelayMs: number;
  /** No resend is started that could not be waited for before this time (by `now`). */
  deadlineMs: number;
  now?: () => number;
  /** Told of each resend, for metrics. */
  onRetry?: (redirect: ClusterRedirect) => void;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `script` over `keys` (all in one hash slot) with `args`; one round trip once Redis has it. With a
 * `redirect` policy, a cluster redirect that comes back as an error is retried within its bounds.
 */
export async function runScript<T>(
  redis: Redis,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
  redirect?: RedirectPolicy,
): Promise<T> {
  for (let retries = 0; ; retries++) {
    try {
      return await runScriptOnce<T>(redis, script, keys, args);
    } catch (error) {
      const kind = clusterRedirectOf(error);
      if (redirect === undefined || kind === null || retries >= redirect.retriesMax) throw error;
      const waitMs = kind === 'tryagain' ? redirect.tryAgainDelayMs : 0;
      if ((redirect.now ?? Date.now)() + waitMs >= redirect.deadlineMs) throw error;
      redirect.onRetry?.(kind);
      // A MOVED that reached us (ioredis ran out of redirections) means a stale slot map: re-read it.
      if (kind === 'moved' && isCluster(redis)) redis.refreshSlotsCache();
      if (waitMs > 0) await sleep(waitMs);
    }
  }
}

async function runScriptOnce<T>(
  redis: Redis,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<T> {
  try {
    return (await redis.evalsha(script.sha, keys.length, ...keys, ...args)) as T;
  } catch (error) {
    if (replyCode(error) !== 'NOSCRIPT') throw error;
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
