// Proves the schedule's rule for `redis_empty_restart` (faults.ts): drawn only when `--faults` names it
// (then in every slot of the servers lane when it is the only kind named), never otherwise, and never
// against a Redis the harness does not own. Pure: no servers.
import { describe, expect, it } from 'vitest';
import { planFaults, type ScheduleOptions } from './faults.ts';
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
