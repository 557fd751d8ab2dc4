/**
 * Whether a Redis keeps what the hot path stored in it. Until the ledger writer has copied them to
 * Postgres, approved holds and their outbox entries live only in Redis, so that Redis must
 *  - write them to its append-only file (AOF) with an fsync policy at least as strict as
 *    REDIS_REQUIRED_APPENDFSYNC (`always`: on disk before the script's reply; `everysec`: up to ~1 s
 *    of answered decisions can be lost with the host), and
 *  - never evict a key to make room (`maxmemory-policy noeviction`): an evicted hold is credit granted
 *    twice, an evicted outbox stream is a decision the books never see.
 * The settings are read with CONFIG GET; managed Redis services often disable or rename CONFIG, and
 * then INFO persistence / INFO memory give `aof_enabled` and `maxmemory_policy` — but not the fsync
 * policy, which is then reported as unverified. docs/operations.md says what is chosen and why.
 *
 * On a Redis Cluster every node is checked, replicas too (a replica becomes the primary of its slots
 * on a failover, so it must keep what it is given just as well); a problem names its node.
 *
 * One check for every process that writes money state to Redis (the hot path and the ledger writer):
 * in production it refuses to start on a Redis that is not durable; in development and test it logs
 * one warn line and runs, and the gauge `credana_redis_durability_ok` says which it was.
 */
import { Gauge, type Registry } from 'prom-client';
import type { Config } from '../config.ts';
import {
  createRedis,
  createServiceRedis,
  describeRedisTarget,
  isCluster,
  type Redis,
  type RedisTarget,
  type SingleRedis,
} from './client.ts';

export type AppendFsyncPolicy = Config['REDIS_REQUIRED_APPENDFSYNC'];

/** How long start-up waits for Redis to answer the check before calling it unreachable. */
export const DURABILITY_CHECK_TIMEOUT_MS = 5_000;

/** Fsync policies from strictest to weakest; a policy satisfies every requirement at or after it. */
const FSYNC_STRENGTH = ['always', 'everysec', 'no'] as const;

export interface RedisDurability {
  /** Where the settings were read: CONFIG GET, or INFO when CONFIG is disabled or renamed. */
  source: 'CONFIG GET' | 'INFO';
  /** What is wrong, one phrase each (empty when the Redis is durable as far as it could be read). */
  problems: string[];
  /** What could not be read, so could not be verified. */
  unverified: string[];
}

async function configValue(redis: SingleRedis, name: string): Promise<string | null> {
  const reply = (await redis.config('GET', name)) as unknown;
  if (!Array.isArray(reply) || reply.length < 2) return null;
  return String(reply[1]);
}

/** `field:value` lines of one INFO section. */
async function infoFields(redis: SingleRedis, section: string): Promise<Map<string, string>> {
  const text = await redis.info(section);
  const fields = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

/**
 * Reads the persistence settings of the Redis behind `redis` (every node of a cluster) and compares
 * them with what is required. Rejects only when Redis (a node) does not answer at all.
 * @example const { problems } = await readRedisDurability(redis, 'always'); // [] when durable
 */
export async function readRedisDurability(
  redis: Redis,
  required: AppendFsyncPolicy,
): Promise<RedisDurability> {
  if (!isCluster(redis)) return readNodeDurability(redis, required);
  if (redis.status !== 'ready') await redis.ping(); // rejects when the cluster does not answer
  // CLUSTER NODES, not the client's own list: CLUSTER SLOTS (what the client knows) leaves out a
  // replica that has not replicated anything yet, and that replica can still become a primary.
  const listed = parseClusterNodes(String(await redis.cluster('NODES')));
  // No node listed would read as "nothing wrong": that is not an answer.
  if (listed.length === 0)
    throw Object.assign(new Error('CLUSTER NODES listed no node'), { code: 'NO_NODES' });
  const reports = await Promise.all(
    listed.map(async ({ host, port, failed }) => {
      const name = `node ${host}:${port}`;
      if (failed)
        return { source: 'CONFIG GET' as const, problems: [], unverified: [`${name}: down (flagged fail)`] };
      const known = redis.nodes('all').find((n) => n.options.host === host && n.options.port === port);
      const node =
        known ??
        createRedis({
          url: `redis://${host}:${port}`,
          commandTimeoutMs: redis.options.redisOptions?.commandTimeout ?? DURABILITY_CHECK_TIMEOUT_MS,
          offlineQueue: true,
          connectionName: redis.options.redisOptions?.connectionName ?? 'credana-durability',
        });
      try {
        const report = await readNodeDurability(node, required);
        return {
          source: report.source,
          problems: report.problems.map((p) => `${name}: ${p}`),
          unverified: report.unverified.map((u) => `${name}: ${u}`),
        };
      } finally {
        if (known === undefined) node.disconnect();
      }
    }),
  );
  return {
    source: reports.some((r) => r.source === 'INFO') ? 'INFO' : 'CONFIG GET',
    problems: reports.flatMap((r) => r.problems),
    unverified: reports.flatMap((r) => r.unverified),
  };
}

/** host, port and whether flagged failed, of each node in a CLUSTER NODES reply. */
export function parseClusterNodes(text: string): { host: string; port: number; failed: boolean }[] {
  const nodes: { host: string; port: number; failed: boolean }[] = [];
  for (const line of text.split('\n')) {
    const [, address, flags] = line.trim().split(' ');
    if (address === undefined || flags === undefined) continue;
    const flagList = flags.split(',');
    if (flagList.includes('noaddr') || flagList.includes('handshake')) continue;
    // `host:port@cport` or `host:port@cport,hostname`.
    const hostPort = address.split('@')[0] ?? '';
    const colon = hostPort.lastIndexOf(':');
    const port = Number(hostPort.slice(colon + 1));
    if (colon <= 0 || !Number.isInteger(port)) continue;
    nodes.push({ host: hostPort.slice(0, colon), port, failed: flagList.includes('fail') });
  }
  return nodes;
}

async function readNodeDurability(redis: SingleRedis, required: AppendFsyncPolicy): Promise<RedisDurability> {
  let source: RedisDurability['source'] = 'CONFIG GET';
  let aofEnabled: boolean | null;
  let appendfsync: string | null = null;
  let maxmemoryPolicy: string | null;
  const unverified: string[] = [];
  try {
    const appendonly = await configValue(redis, 'appendonly');
    aofEnabled = appendonly === null ? null : appendonly === 'yes';
    appendfsync = await configValue(redis, 'appendfsync');
    maxmemoryPolicy = await configValue(redis, 'maxmemory-policy');
  } catch (error) {
    // A connection that is not ready is not a disabled CONFIG: let the caller see Redis is away.
    if (redis.status !== 'ready') throw error;
    source = 'INFO';
    const persistence = await infoFields(redis, 'persistence');
    const memory = await infoFields(redis, 'memory');
    const aof = persistence.get('aof_enabled');
    aofEnabled = aof === undefined ? null : aof === '1';
    maxmemoryPolicy = memory.get('maxmemory_policy') ?? null;
    unverified.push('appendfsync (CONFIG GET is refused and INFO does not report it)');
  }
  const problems: string[] = [];
  if (aofEnabled === null) unverified.push('appendonly (not reported)');
  else if (!aofEnabled)
    problems.push('AOF is off (appendonly no), so a restart loses holds and outbox entries');
  if (aofEnabled !== false && appendfsync !== null) {
    const strength = FSYNC_STRENGTH.indexOf(appendfsync as (typeof FSYNC_STRENGTH)[number]);
    if (strength < 0 || strength > FSYNC_STRENGTH.indexOf(required)) {
      problems.push(`appendfsync is ${appendfsync}, weaker than REDIS_REQUIRED_APPENDFSYNC=${required}`);
    }
  }
  if (maxmemoryPolicy === null) unverified.push('maxmemory-policy (not reported)');
  else if (maxmemoryPolicy !== 'noeviction') {
    problems.push(
      `maxmemory-policy is ${maxmemoryPolicy}, not noeviction, so Redis may evict holds and outbox entries`,
    );
  }
  return { source, problems, unverified };
}

/** What start-up does with the durability of its Redis. */
export interface DurabilityVerdict {
  /** True when nothing wrong was found (what could not be read is in `report.unverified`). */
  ok: boolean;
  /** Production on a Redis that is not durable (or does not answer): do not start. */
  refuse: boolean;
  /** One line for the operator, naming the problems; null when all is well and verified. */
  line: string | null;
  report: RedisDurability | null;
}

/** The logger calls the check makes (pino's `warn(object, message)`). */
export interface DurabilityLogger {
  warn(details: object, message: string): void;
}

export interface DurabilityCheckOptions {
  redis: Redis;
  required: AppendFsyncPolicy;
  nodeEnv: Config['NODE_ENV'];
  logger: DurabilityLogger;
  /** What the lines call the Redis (default REDIS_URL). */
  where?: string;
}

/**
 * Decides whether a process may run on this Redis: in production only when nothing is wrong; in
 * development and test always, with one warn-level log line when something is wrong or unverified.
 * In production the refusal is not logged here: the caller prints `line` and exits.
 */
export async function checkRedisDurability(options: DurabilityCheckOptions): Promise<DurabilityVerdict> {
  const { redis, required, nodeEnv, logger } = options;
  const where = options.where ?? 'REDIS_URL';
  const production = nodeEnv === 'production';
  let report: RedisDurability;
  try {
    report = await readRedisDurability(redis, required);
  } catch (error) {
    const line = `redis: ${where} did not answer the durability check (${(error as { code?: string }).code ?? 'no reply'}), so its persistence cannot be verified`;
    if (!production) logger.warn({ nodeEnv, durable: false }, line);
    return { ok: false, refuse: production, line, report: null };
  }
  const ok = report.problems.length === 0;
  const unverified = report.unverified.length === 0 ? '' : `; not verified: ${report.unverified.join(', ')}`;
  if (ok && unverified === '') return { ok, refuse: false, line: null, report };
  const line = ok
    ? `redis: ${where} persistence could be checked only in part (read with ${report.source})${unverified}`
    : `redis: ${where} is not durable enough for money state (read with ${report.source}): ${report.problems.join('; ')}${unverified}`;
  if (ok || !production) {
    logger.warn(
      {
        nodeEnv,
        durable: ok,
        problems: report.problems,
        unverified: report.unverified,
        ...(ok ? {} : { acceptedBecause: `NODE_ENV=${nodeEnv}; production refuses to start` }),
      },
      line,
    );
  }
  return { ok, refuse: production && !ok, line, report };
}

/**
 * For process entry points: checks REDIS_URL (or every node of REDIS_CLUSTER_NODES) on a connection of
 * its own, and in production prints one
 * line to stderr and exits with status 78 (EX_CONFIG, as a bad setting) when Redis is not durable.
 * Returns whether it was found durable (for `durabilityGauge`).
 */
export async function enforceRedisDurability(
  config: RedisTarget & Pick<Config, 'REDIS_REQUIRED_APPENDFSYNC' | 'NODE_ENV'>,
  logger: DurabilityLogger,
  connectionName: string,
): Promise<boolean> {
  const redis = createServiceRedis(config, {
    commandTimeoutMs: DURABILITY_CHECK_TIMEOUT_MS,
    connectionName,
  });
  try {
    const verdict = await checkRedisDurability({
      redis,
      required: config.REDIS_REQUIRED_APPENDFSYNC,
      nodeEnv: config.NODE_ENV,
      logger,
      where: describeRedisTarget(config),
    });
    if (verdict.refuse) {
      process.stderr.write(`${verdict.line} (refused: NODE_ENV=production)\n`);
      process.exit(78);
    }
    return verdict.ok;
  } finally {
    redis.disconnect();
  }
}

/** `credana_redis_durability_ok`: 1 when the Redis was found durable at start-up, 0 when not. */
export function durabilityGauge(registry: Registry, ok: boolean): Gauge {
  const gauge = new Gauge({
    name: 'credana_redis_durability_ok',
    help: 'Whether Redis had AOF with the required appendfsync and maxmemory-policy noeviction at start-up (1) or not (0)',
    registers: [registry],
  });
  gauge.set(ok ? 1 : 0);
  return gauge;
}
