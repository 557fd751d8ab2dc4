// Proves the schedule's opt-in kinds (faults.ts): `redis_empty_restart` is drawn only when `--faults`
// names it (then in every slot of the servers lane when it is the only kind named), never otherwise, and
// never against a Redis the harness does not own; the Redis Cluster mode's schedule (planFaults with
// `redisCluster`) draws the same process lane as the single-Redis schedule, plays only cluster kinds for
// Redis (each aimed at a shard), reports the proxy kinds it dropped, and a schedule without the option
// never has a cluster kind; the withdrawal approver's lane is drawn only with the chain, aims only at
// `withdrawals-0` and leaves the process and server lanes where they were. Pure: no servers.
import { describe, expect, it } from 'vitest';
import {
  CLUSTER_FAULTS,
  PROCESS_FAULTS,
  planFaults,
  type ScheduleOptions,
  SERVER_FAULTS,
  WITHDRAWALS_FAULTS,
} from './faults.ts';
import type { FaultKind } from './history.ts';
import { deriveRandom } from './random.ts';

const base: ScheduleOptions = { durationMs: 20_000, hotPaths: 2, writers: 1, redisKillable: true };
const plan = (seed: number, o: Partial<ScheduleOptions> = {}) =>
  planFaults(deriveRandom(seed, 'faults'), { ...base, ...o });

describe('redis_empty_restart in the schedule', () => {
  it('is never drawn unless named', () => {
    for (let seed = 1; seed <= 100; seed++) {
      expect(plan(seed).some((f) => f.kind === 'redis_empty_restart')).toBe(false);
      expect(plan(seed, { chain: true }).some((f) => f.kind === 'redis_empty_restart')).toBe(false);
    }
  });

  it('fills the servers lane when it is the only kind named, with target redis', () => {
    let drawn = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const faults = plan(seed, { kinds: ['redis_empty_restart'] });
      expect(faults.every((f) => f.kind === 'redis_empty_restart' && f.target === 'redis')).toBe(true);
      drawn += faults.length;
    }
    expect(drawn).toBeGreaterThan(20);
  });

  it('leaves the process lane where it was when named beside other kinds', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const processes = (kinds: ScheduleOptions['kinds']) =>
        plan(seed, kinds === undefined ? {} : { kinds }).filter((f) => f.kind === 'kill_writer');
      expect(processes(['kill_writer', 'redis_empty_restart'])).toEqual(processes(['kill_writer']));
    }
  });

  it('is not drawn against a Redis the harness does not own', () => {
    for (let seed = 1; seed <= 20; seed++)
      expect(plan(seed, { kinds: ['redis_empty_restart'], redisKillable: false })).toEqual([]);
  });
});

const OPTIONS = { durationMs: 30_000, hotPaths: 2, writers: 1, redisKillable: true };
const PROXY_REDIS: FaultKind[] = ['redis_stall', 'redis_one_way', 'redis_latency'];

describe('the cluster fault schedule', () => {
  it('replaces the Redis kill and cut by failovers, drops the other Redis proxy kinds, keeps the process lane', () => {
    let failovers = 0;
    let dropped = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const single = planFaults(deriveRandom(seed, 'faults'), OPTIONS);
      const droppedKinds: FaultKind[] = [];
      const cluster = planFaults(deriveRandom(seed, 'faults'), {
        ...OPTIONS,
        redisCluster: { dropped: droppedKinds },
      });
      expect(single.some((f) => CLUSTER_FAULTS.includes(f.kind))).toBe(false);
      const processLane = (faults: typeof single) => faults.filter((f) => PROCESS_FAULTS.includes(f.kind));
      expect(processLane(cluster)).toEqual(processLane(single));
      for (const f of cluster) {
        expect(f.kind === 'redis_kill_restart' || f.kind === 'redis_cut').toBe(false);
        expect(PROXY_REDIS.includes(f.kind)).toBe(false);
        if (CLUSTER_FAULTS.includes(f.kind)) {
          expect(f.target).toMatch(/^shard-[0-2]$/);
          failovers++;
        } else expect([...PROCESS_FAULTS, ...SERVER_FAULTS]).toContain(f.kind);
      }
      for (const kind of droppedKinds) expect(PROXY_REDIS).toContain(kind);
      dropped += droppedKinds.length;
    }
    // Over 40 seeds of 30 s both happen (so the checks above were exercised).
    expect(failovers).toBeGreaterThan(0);
    expect(dropped).toBeGreaterThan(0);
  });
});

describe("the withdrawal approver's lane", () => {
  it('is drawn only with the chain, aimed at withdrawals-0, after the other lanes', () => {
    let drawn = 0;
    for (let seed = 1; seed <= 40; seed++) {
      expect(plan(seed).some((f) => f.target === 'withdrawals-0')).toBe(false);
      const withChain = plan(seed, { chain: true });
      const lane = withChain.filter((f) => f.target === 'withdrawals-0');
      for (const f of lane) expect(WITHDRAWALS_FAULTS).toContain(f.kind);
      drawn += lane.length;
      const firstTwo = (faults: typeof withChain) =>
        faults.filter((f) => PROCESS_FAULTS.includes(f.kind) || SERVER_FAULTS.includes(f.kind));
      expect(firstTwo(withChain)).toEqual(firstTwo(plan(seed)));
    }
    expect(drawn).toBeGreaterThan(0);
  });
});
