// Proves the stored answer has one format on both sides: what the Lua fragments build (run in a real
// Redis) parses in TypeScript to the same answer, and what TypeScript encodes is matched by the Lua
// patterns to the same amount and decision id (or, for a decline, not taken for an approval).
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClusterNodes, redisUrl } from '../../test/support/env.ts';
import { createRedis, type Redis } from '../redis/client.ts';
import { luaConcat } from './lua-source.ts';
import {
  encodeStoredAnswer,
  isStoredApproval,
  parseStoredAnswer,
  STORED_ANSWER_LUA as S,
  type StoredAnswer,
} from './stored-answer.ts';

let redis: Redis;

beforeAll(() => {
  redis = createRedis({ url: redisUrl(), clusterNodes: redisClusterNodes() });
});

afterAll(() => {
  redis.disconnect();
});

const answer: fc.Arbitrary<StoredAnswer> = fc.record({
  approved: fc.boolean(),
  amountCents: fc.bigInt({ min: 0n, max: 1_000_000_000n }),
  reason: fc.constantFrom('approved', 'partial', 'insufficient_credit', 'replication_unconfirmed' as const),
  decisionId: fc.stringMatching(/^dec_[0-9a-z]{1,30}$/),
});

/** Runs `lua` with no keys (EVAL accepts that on a cluster too: it goes to any node). */
function evalLua<T>(lua: string, ...args: string[]): Promise<T> {
  return redis.eval(lua, 0, ...args) as Promise<T>;
}

describe('the stored answer', () => {
  it('built in Lua, parses in TypeScript to the same answer', async () => {
    await fc.assert(
      fc.asyncProperty(answer, async (a) => {
        const lua = `return ${S.encode(`ARGV[1] == '1' and ${S.approved} or ${S.declined}`, 'ARGV[2]', 'ARGV[3]', 'ARGV[4]')}`;
        const stored = await evalLua<string>(
          lua,
          a.approved ? '1' : '0',
          a.amountCents.toString(),
          a.reason,
          a.decisionId,
        );
        expect(stored).toBe(encodeStoredAnswer(a));
        expect(parseStoredAnswer(stored)).toEqual(a);
        expect(isStoredApproval(stored)).toBe(a.approved);
      }),
      { numRuns: 100 },
    );
  });

  it('encoded in TypeScript, is read by the Lua patterns as it was meant', async () => {
    await fc.assert(
      fc.asyncProperty(answer, async (a) => {
        const stored = encodeStoredAnswer(a);
        const read = await evalLua<[string, string, string, string, number]>(
          `local amount, id = string.match(ARGV[1], ${S.anyAmountAndId})
local approvedAmount, approvedId = string.match(ARGV[1], ${S.approvalAmountAndId})
return {amount or '', id or '', approvedAmount or '', approvedId or '', string.sub(ARGV[1], 1, 2) == ${S.approvalPrefix} and 1 or 0}`,
          stored,
        );
        expect(read).toEqual([
          a.amountCents.toString(),
          a.decisionId,
          a.approved ? a.amountCents.toString() : '',
          a.approved ? a.decisionId : '',
          a.approved ? 1 : 0,
        ]);
      }),
      { numRuns: 100 },
    );
  });

  it('folds adjacent Lua literals, so a constant answer reads as one string', () => {
    expect(S.encode(S.declined, "'0'", "'replication_unconfirmed'", 'id')).toBe(
      "'0|0|replication_unconfirmed|' .. id",
    );
    expect(luaConcat(['a', "'x'", 'ARGV[2]'], '|')).toBe("a .. '|x|' .. ARGV[2]");
    expect(luaConcat(["x and 'a' or 'b'", 'y'], '|')).toBe("(x and 'a' or 'b') .. '|' .. y");
  });
});
