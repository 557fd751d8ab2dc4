// Proves the writer's lane split keeps every entry of one user in one lane and in stream order (so one
// user's movements are written in order), spreads users over the lanes, and puts everything in one lane
// when there is one; pure functions over real parsed outbox entries.
import { describe, expect, it } from 'vitest';
import { laneOf, splitLanes } from './lanes.ts';
import { decisionFields } from './testing.ts';
import { parseEntry } from './write-batch.ts';

describe('laneOf', () => {
  it('puts every entry of one user in one lane, spreads users over the lanes, and one lane takes all', () => {
    const entryOf = (userId: string | null, i: number) => {
      const parsed = parseEntry({
        stream: 's',
        id: `1-${i}`,
        fields: toObject(
          decisionFields({ userId, cardId: 'ic_test', grantedCents: userId === null ? 0n : 5n }),
        ),
      });
      if (!parsed.ok) throw new Error(parsed.error);
      return parsed.entry;
    };
    const userIds = Array.from(
      { length: 40 },
      (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    );
    const lanesOfUser = new Map<string, Set<number>>();
    for (let i = 0; i < 400; i++) {
      const userId = userIds[i % userIds.length]!;
      const lanes = lanesOfUser.get(userId) ?? new Set<number>();
      lanes.add(laneOf(entryOf(userId, i), 2));
      lanesOfUser.set(userId, lanes);
    }
    expect([...lanesOfUser.values()].every((lanes) => lanes.size === 1)).toBe(true);
    expect(new Set([...lanesOfUser.values()].map((lanes) => [...lanes][0]))).toEqual(new Set([0, 1]));
    expect(laneOf(entryOf(userIds[0]!, 0), 1)).toBe(0);
    expect(laneOf(entryOf(null, 0), 2)).toBeLessThan(2);
  });
});

function toObject(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
  return fields;
}

describe('splitLanes', () => {
  it("gives each lane its users' entries in their original order, and loses none", () => {
    const userIds = Array.from(
      { length: 12 },
      (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    );
    const entries = Array.from({ length: 120 }, (_, i) => {
      const parsed = parseEntry({
        stream: `s${i % 3}`,
        id: `${1000 + i}-0`,
        fields: toObject(
          decisionFields({ userId: userIds[i % userIds.length]!, cardId: 'ic_test', grantedCents: 5n }),
        ),
      });
      if (!parsed.ok) throw new Error(parsed.error);
      return parsed.entry;
    });
    const lanes = splitLanes(entries, 3);
    expect(lanes).toHaveLength(3);
    expect(lanes.flat()).toHaveLength(entries.length);
    expect(new Set(lanes.flat())).toEqual(new Set(entries));
    for (const [i, lane] of lanes.entries()) {
      expect(lane.every((entry) => laneOf(entry, 3) === i)).toBe(true);
      const order = lane.map((entry) => entries.indexOf(entry));
      expect(order).toEqual([...order].sort((a, b) => a - b));
    }
    expect(lanes.filter((lane) => lane.length > 0).length).toBeGreaterThan(1);
    expect(splitLanes(entries, 1)).toEqual([entries]);
  });
});
