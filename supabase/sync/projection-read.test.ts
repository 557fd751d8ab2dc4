// Proves the projection's activity is computed from the snapshot's rows as the dashboard shows it, without a
// database (pure function over rows shaped as the queries return them): per user newest first (ties by
// id) and at most activityPerUserMax each; an authorization's outcome and decline message; a capture's
// merchant name opened once per authorization; a liquidation's covered debt floored to cents and its
// asset named by token; a malformed chain amount shown as none. readTruth itself runs on real Postgres in
// projection-health.test.ts, projection-sync.test.ts and ledger-writer/sealing.test.ts.
import { describe, expect, it } from 'vitest';
import {
  activityRows,
  DEFAULT_CHAIN_EVENT_NAMES,
  DEFAULT_LIQUIDATION_EVENT_NAMES,
} from './projection-read.ts';

const U1 = '00000000-0000-4000-8000-000000000001';
const U2 = '00000000-0000-4000-8000-000000000002';
const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));

const authorization = (
  id: string,
  userId: string,
  s: number,
  o: Partial<{ approved: boolean; decision: string }> = {},
) => ({
  id,
  user_id: userId,
  status: 'closed',
  approved: o.approved ?? true,
  requested_cents: '500',
  approved_cents: o.approved === false ? '0' : '400',
  decision: o.decision ?? 'approved',
  decline_reason: o.approved === false ? 'insufficient_credit' : null,
  merchant_name_sealed: Buffer.from(`sealed-${id}`),
  merchant_category_code: '5411',
  created_at: at(s),
});

describe('activityRows', () => {
  it('orders each user newest first, keeps at most activityPerUserMax, and opens each name once', async () => {
    const openedFor: string[] = [];
    const merchantNames = {
      open: async (authorizationId: string, sealed: Buffer) => {
        openedFor.push(authorizationId);
        return `name of ${sealed.toString()}`;
      },
    } as unknown as NonNullable<Parameters<typeof activityRows>[1]['merchantNames']>;
    const activity = await activityRows(
      {
        authorizations: [
          authorization('iauth_a', U1, 1),
          authorization('iauth_b', U1, 3, { approved: false, decision: 'declined' }),
          authorization('iauth_c', U2, 2),
        ],
        transfers: [
          {
            ref: 'capture:ipi_1',
            kind: 'capture',
            user_id: U1,
            authorization_id: 'iauth_a',
            amount_cents: '400',
            merchant_name_sealed: Buffer.from('sealed-iauth_a'),
            merchant_category_code: '5411',
            created_at: at(3),
          },
        ],
        chain: [
          {
            chain_id: 31337,
            block_hash: '0xabc',
            log_index: 0,
            user_id: U1,
            event_name: 'Liquidated',
            token: '0xToken'.toLowerCase(),
            asset_hint: null,
            amount: '5',
            seized: '1000',
            covered_usdc: '1234567',
            applied_at: at(0),
            created_at: at(0),
          },
          {
            chain_id: 31337,
            block_hash: '0xdef',
            log_index: 1,
            user_id: U2,
            event_name: 'Deposited',
            token: null,
            asset_hint: 'WETH',
            amount: '-1',
            seized: null,
            covered_usdc: null,
            applied_at: null,
            created_at: at(1),
          },
        ],
      },
      {
        activityPerUserMax: 3,
        merchantNames,
        names: DEFAULT_CHAIN_EVENT_NAMES,
        liquidationNames: DEFAULT_LIQUIDATION_EVENT_NAMES,
        assets: [{ id: 'WETH', token_address: '0xTOKEN' }],
      },
    );
    expect(activity.map((a) => [a.user_id, a.id])).toEqual([
      [U1, 'authorization:iauth_b'], // at 3, and 'authorization:…' < 'capture:…'
      [U1, 'capture:ipi_1'],
      [U1, 'authorization:iauth_a'], // the liquidation, oldest, is the fourth: cut
      [U2, 'authorization:iauth_c'],
      [U2, 'chain:31337:0xdef:1'],
    ]);
    const [declined, capture, approved, , deposit] = activity;
    expect(declined).toMatchObject({
      outcome: 'declined',
      amount_cents: '500',
      decline_code: 'insufficient_credit',
    });
    expect(declined!.decline_message).toEqual(expect.any(String));
    expect(approved).toMatchObject({ outcome: 'approved', amount_cents: '400', decline_message: null });
    expect(capture).toMatchObject({
      kind: 'capture',
      status: 'posted',
      merchant_name: 'name of sealed-iauth_a',
    });
    expect(openedFor.filter((id) => id === 'iauth_a')).toHaveLength(1);
    expect(deposit).toMatchObject({
      kind: 'deposit',
      status: 'pending',
      asset_id: 'WETH',
      amount_base: null,
    });
  });

  it("shows a liquidation's seized collateral, its asset by token, and the debt covered floored to cents", async () => {
    const [row] = await activityRows(
      {
        authorizations: [],
        transfers: [],
        chain: [
          {
            chain_id: 31337,
            block_hash: '0xabc',
            log_index: 0,
            user_id: U1,
            event_name: 'Liquidated',
            token: '0xtoken',
            asset_hint: null,
            amount: null,
            seized: '1000',
            covered_usdc: '1234567',
            applied_at: at(0),
            created_at: at(0),
          },
        ],
      },
      {
        activityPerUserMax: 3,
        names: DEFAULT_CHAIN_EVENT_NAMES,
        liquidationNames: DEFAULT_LIQUIDATION_EVENT_NAMES,
        assets: [{ id: 'WETH', token_address: '0xTOKEN' }],
      },
    );
    expect(row).toMatchObject({
      kind: 'liquidation',
      status: 'confirmed',
      asset_id: 'WETH',
      amount_base: '1000',
      amount_cents: '123', // 1.234567 USDC covers 123 cents, floored
    });
  });
});
