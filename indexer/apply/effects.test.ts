// Proves the credit-timing table (shrinks at first sight, grows after confirmations) and the
// additive deltas that make undo exact, as pure functions; and the liquidation-first planning rule.
import { describe, expect, it } from 'vitest';
import type { EventRecord } from '../store/index.ts';
import { appliesNow, argsToJson, confirmedTipOf, effectOf } from './effects.ts';
import { type ApplyContext, planApply } from './index.ts';

const user = '0x00000000000000000000000000000000000000aa';
const token = '0x00000000000000000000000000000000000000bb';

describe('effectOf', () => {
  it('gives each vault event its delta and timing', () => {
    expect(effectOf('Deposited', { user, token, amount: 5n })).toMatchObject({
      timing: 'confirmed',
      position: { collateralDelta: 5n, pendingDelta: 0n },
    });
    expect(effectOf('WithdrawalRequested', { user, token, amount: 3n })).toMatchObject({
      timing: 'now',
      position: { collateralDelta: 0n, pendingDelta: 3n },
    });
    expect(effectOf('WithdrawalCancelled', { user, token, amount: 3n })).toMatchObject({
      timing: 'confirmed',
      position: { pendingDelta: -3n },
    });
    expect(effectOf('WithdrawalFinalized', { user, token, amount: 3n })).toMatchObject({
      timing: 'confirmed',
      position: { collateralDelta: -3n, pendingDelta: -3n },
    });
    expect(effectOf('SpendRecorded', { user, ref: 'ipi_1', amountUsdc: 7n })).toMatchObject({
      timing: 'now',
      debtUsdcDelta: 7n,
      spend: { ref: 'ipi_1', amountUsdc: 7n, creditUsedUsdc: 0n },
    });
    expect(effectOf('Repaid', { user, amountUsdc: 7n })).toMatchObject({
      timing: 'confirmed',
      debtUsdcDelta: -7n,
    });
    expect(
      effectOf('Liquidated', {
        user,
        token,
        collateralSeized: 4n,
        debtCoveredUsdc: 9n,
        pendingWithdrawalReduced: 1n,
      }),
    ).toMatchObject({
      timing: 'now',
      position: { collateralDelta: -4n, pendingDelta: -1n },
      debtUsdcDelta: -9n,
      appliesEarlierFirst: true,
    });
    expect(
      effectOf('AnswerUpdated', { current: 100n, roundId: 2n, updatedAt: 1_700_000_000n }),
    ).toMatchObject({
      timing: 'now-if-drop',
      wallet: null,
    });
    expect(effectOf('RoleSet', { role: '0x', account: user, granted: true })).toBeNull();
  });

  it('reads stored JSON args the same as decoded ones', () => {
    const decoded = { user: user.toUpperCase().replace('0X', '0x'), token, amount: 12345678901234567890n };
    expect(effectOf('Deposited', argsToJson(decoded))).toEqual(effectOf('Deposited', decoded));
    expect(argsToJson(decoded)).toEqual({ user, token, amount: '12345678901234567890' });
  });

  it('rejects malformed arguments loudly (a programmer error, not a skipped event)', () => {
    expect(() => effectOf('Deposited', { user: 'nope', token, amount: 1n })).toThrow(/user/);
    expect(() => effectOf('Deposited', { user, token, amount: 'x' })).toThrow(/amount/);
  });
});

describe('appliesNow and confirmations', () => {
  const tip = confirmedTipOf(100n, 3); // blocks ≤ 98 have 3 confirmations at head 100
  it('counts the including block as the first confirmation', () => {
    expect(tip).toBe(98n);
    expect(confirmedTipOf(100n, 1)).toBe(100n);
    expect(confirmedTipOf(100n, 0)).toBe(100n);
  });
  it('applies shrinking effects at once and growing ones when confirmed', () => {
    const deposit = effectOf('Deposited', { user, token, amount: 1n });
    const request = effectOf('WithdrawalRequested', { user, token, amount: 1n });
    if (deposit === null || request === null) throw new Error('unreachable');
    expect(appliesNow(deposit, 99n, tip, undefined)).toBe(false);
    expect(appliesNow(deposit, 98n, tip, undefined)).toBe(true);
    expect(appliesNow(request, 100n, tip, undefined)).toBe(true);
  });
  it('applies a price drop (or an unchanged price) at once and a rise or a first price when confirmed', () => {
    const price = (answer: bigint) => {
      const e = effectOf('AnswerUpdated', { current: answer, roundId: 5n, updatedAt: 1n });
      if (e === null) throw new Error('unreachable');
      return e;
    };
    expect(appliesNow(price(90n), 100n, tip, 100n)).toBe(true);
    expect(appliesNow(price(100n), 100n, tip, 100n)).toBe(true);
    expect(appliesNow(price(101n), 100n, tip, 100n)).toBe(false);
    expect(appliesNow(price(90n), 100n, tip, undefined)).toBe(false);
    expect(appliesNow(price(101n), 98n, tip, 100n)).toBe(true);
  });
});

describe('planApply', () => {
  const ctx: ApplyContext = {
    chainId: 1,
    cursorId: 'c',
    confirmations: 3,
    reorgDepthMax: 10,
    assetByToken: new Map([[token, 'WETH']]),
    assetByAggregator: new Map(),
  };
  const record = (
    blockNumber: bigint,
    logIndex: number,
    eventName: string,
    args: Record<string, unknown>,
  ): EventRecord => ({
    chainId: 1,
    blockNumber,
    blockHash: `0x${blockNumber.toString(16).padStart(64, '0')}`,
    logIndex,
    transactionHash: `0x${'0'.repeat(64)}`,
    address: '0x00000000000000000000000000000000000000cc',
    eventName,
    args: argsToJson(args),
    userId: 'u1',
    applied: false,
  });

  it('applies a liquidation together with the user’s earlier waiting events, in chain order', async () => {
    const storedDeposit = record(97n, 0, 'Deposited', { user, token, amount: 1n }); // waiting (tip 96)
    const freshDeposit = record(98n, 0, 'Deposited', { user, token, amount: 2n });
    const liquidation = record(99n, 1, 'Liquidated', {
      user,
      token,
      collateralSeized: 3n,
      debtCoveredUsdc: 1n,
      pendingWithdrawalReduced: 0n,
    });
    const { apply, promoted } = await planApply(
      ctx,
      [freshDeposit, liquidation],
      [],
      confirmedTipOf(99n, 4),
      new Map(),
      async () => [storedDeposit],
    );
    expect(apply).toEqual([storedDeposit, freshDeposit, liquidation]);
    expect(promoted).toEqual([storedDeposit]);
    expect(freshDeposit.applied).toBe(true);
  });

  it('leaves growing events waiting when nothing forces them', async () => {
    const deposit = record(99n, 0, 'Deposited', { user, token, amount: 2n });
    const { apply } = await planApply(ctx, [deposit], [], confirmedTipOf(99n, 3), new Map(), async () => []);
    expect(apply).toEqual([]);
    expect(deposit.applied).toBe(false);
  });
});
