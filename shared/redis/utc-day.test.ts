// Proves utcDay (the daily spend's key) names the UTC day of any time, whatever order it is asked in:
// it keeps the day it last formatted, and must not hand that day out for a time outside it.
import { describe, expect, it } from 'vitest';
import { utcDay } from './account.ts';

const isoDay = (ms: number) => new Date(ms).toISOString().slice(0, 10).replaceAll('-', '');

describe('utcDay', () => {
  it('agrees with the ISO date at and around midnight, forwards and backwards in time', () => {
    const midnight = Date.UTC(2026, 11, 7);
    const times = [-1, 0, 1, 86_399_999, 86_400_000, 86_400_001].map((d) => midnight + d);
    for (const ms of [...times, ...times.reverse(), midnight - 86_400_000 * 365, midnight]) {
      expect(utcDay(ms)).toBe(isoDay(ms));
    }
    expect(utcDay(midnight - 1)).toBe('20261206');
    expect(utcDay(midnight)).toBe('20261207');
  });

  it('agrees with the ISO date on times spread over centuries, before 1970 included', () => {
    let seed = 7;
    for (let i = 0; i < 5_000; i++) {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      const ms = Math.floor((seed / 2_147_483_648 - 0.3) * 1e13);
      expect(utcDay(ms)).toBe(isoDay(ms));
    }
  });

  it('throws on a time that is no date, as the ISO formatting does', () => {
    expect(() => utcDay(Number.NaN)).toThrow(RangeError);
  });
});
