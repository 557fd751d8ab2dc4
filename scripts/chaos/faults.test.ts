// Proves the Redis Cluster mode's fault schedule (planFaults with `redisCluster`) draws the same process lane as the single-Redis schedule, plays only cluster kinds for Redis (each aimed at a shard), reports the proxy kinds it dropped, and that a schedule without the option never has a cluster kind.
import { describe, expect, it } from 'vitest';
import { CLUSTER_FAULTS, PROCESS_FAULTS, planFaults, SERVER_FAULTS } from './faults.ts';
import type { FaultKind } from './history.ts';
import { deriveRandom } from './random.ts';

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
