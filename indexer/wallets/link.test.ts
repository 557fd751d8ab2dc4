// Proves wallet linking on a real chain, Postgres and Redis: an EIP-4361 message signed by the
// address links it (adopting the events indexed before, by the indexer's rules), exactly once per
// nonce, one address per user; forged, replayed, stale, foreign-domain messages are refused.
import { randomUUID } from 'node:crypto';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ChainHarness,
  localAccount,
  seedAssets,
  seedUser,
  startChainHarness,
} from '../../scripts/chain/harness.ts';
import { createTestIndexer, silentLogger } from '../../scripts/chain/testing.ts';
import { ensureAccount } from '../../shared/redis/account.ts';
import { ACCOUNT, userKeys } from '../../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { createCacheWriter } from '../apply/redis.ts';
import { type Indexer, loadApplyContext } from '../runtime/index.ts';
import { createLinkChallenge, type LinkDeps, type LinkSettings, linkWallet } from './index.ts';

const ETH = 10n ** 18n;
let services: TestServices;
let chain: ChainHarness;
let indexer: Indexer;
let deps: LinkDeps;
let settings: LinkSettings;
const owner = () => privateKeyToAccount(localAccount(7).privateKey);
const stranger = () => privateKeyToAccount(localAccount(8).privateKey);

async function signedLink(userId: string, signer = owner(), address = owner().address, nowMs?: number) {
  const { message } = await createLinkChallenge(services.redis, services.prefix, settings, {
    userId,
    address,
    ...(nowMs === undefined ? {} : { nowMs }),
  });
  return { userId, message, signature: await signer.signMessage({ message }) };
}

beforeAll(async () => {
  [services, chain] = await Promise.all([setUpServices(), startChainHarness()]);
  await seedAssets(services.database.sql, chain.contracts);
  ({ indexer } = createTestIndexer(services, chain, { confirmations: 2 }));
  const wallet = owner().address.toLowerCase() as `0x${string}`;
  await chain.deposit(wallet, 'WETH', 1n * ETH);
  await chain.mine(2);
  await chain.requestWithdrawal(wallet, 'WETH', ETH / 4n);
  await indexer.syncToHead();
  settings = {
    domain: 'app.credana.test',
    uri: 'https://app.credana.test/wallets',
    chainId: chain.contracts.chainId,
  };
  const { ctx } = await loadApplyContext({
    sql: services.database.sql,
    client: chain.publicClient,
    contracts: chain.contracts,
    chainId: chain.contracts.chainId,
    confirmations: 2,
    reorgDepthMax: 16,
  });
  deps = {
    sql: services.database.sql,
    redis: services.redis,
    prefix: services.prefix,
    settings,
    client: chain.publicClient,
    ctx,
    cache: createCacheWriter({
      sql: services.database.sql,
      redis: services.redis,
      prefix: services.prefix,
      logger: silentLogger,
    }),
  };
});

afterAll(async () => {
  await indexer?.stop();
  await chain?.stop();
  await services?.close();
});

describe('linking a wallet', () => {
  it('stores events of an unlinked address without moving anyone’s credit', async () => {
    const rows = await services.database.sql`
      select event_name, user_id, applied_at from chain_events where args->>'user' = ${owner().address.toLowerCase()}`;
    expect(rows.map((r) => r['event_name']).sort()).toEqual(['Deposited', 'WithdrawalRequested']);
    expect(rows.every((r) => r['user_id'] === null && r['applied_at'] === null)).toBe(true);
    expect(await services.database.sql`select * from positions`).toHaveLength(0);
  });

  it('links with a valid signature and adopts the address’s history', async () => {
    const userId = await seedUser(services.database.sql, { chainId: chain.contracts.chainId });
    await ensureAccount(services.redis, services.database.sql, services.prefix, userId);
    const result = await linkWallet(deps, await signedLink(userId));
    expect(result).toMatchObject({ ok: true, linked: 'new', adopted: 2 });
    const [position] = await services.database.sql`
      select collateral_base::text as c, pending_withdrawal_base::text as w from positions where user_id = ${userId}`;
    expect(position).toEqual({ c: ETH.toString(), w: (ETH / 4n).toString() });
    const cached = await services.redis.hgetall(userKeys(services.prefix, userId).account);
    expect(cached[`${ACCOUNT.collateralPrefix}WETH`]).toBe(ETH.toString());
    expect(cached[`${ACCOUNT.pendingWithdrawalPrefix}WETH`]).toBe((ETH / 4n).toString());
    // From now on the indexer attributes the address's new events to the user.
    await chain.cancelWithdrawal(owner().address, 'WETH');
    await chain.mine(2);
    await indexer.syncToHead();
    const [after] = await services.database
      .sql`select pending_withdrawal_base::text as w from positions where user_id = ${userId}`;
    expect(after?.['w']).toBe('0');
    // Linking again is harmless and adopts nothing twice.
    expect(await linkWallet(deps, await signedLink(userId))).toMatchObject({
      ok: true,
      linked: 'existing',
      adopted: 0,
    });
    const [again] = await services.database
      .sql`select collateral_base::text as c from positions where user_id = ${userId}`;
    expect(again?.['c']).toBe(ETH.toString());
  });

  it('refuses a second user for the same address', async () => {
    const other = await seedUser(services.database.sql, { chainId: chain.contracts.chainId });
    expect(await linkWallet(deps, await signedLink(other))).toEqual({ ok: false, reason: 'wallet_taken' });
  });

  it('refuses replays, forgeries, stale messages and other sites', async () => {
    const userId = await seedUser(services.database.sql, { chainId: chain.contracts.chainId });
    const target = stranger().address;
    const good = await signedLink(userId, stranger(), target);
    expect(await linkWallet(deps, good)).toMatchObject({ ok: true, linked: 'new' });
    expect(await linkWallet(deps, good)).toEqual({ ok: false, reason: 'nonce_unknown' }); // replayed

    const forged = await signedLink(userId, owner(), privateKeyToAccount(localAccount(9).privateKey).address);
    expect(await linkWallet(deps, forged)).toEqual({ ok: false, reason: 'bad_signature' });

    const old = await signedLink(userId, stranger(), target, Date.now() - 3_600_000);
    expect(await linkWallet(deps, old)).toEqual({ ok: false, reason: 'expired' });

    const elsewhere = await signedLink(userId, stranger(), target);
    const phishing = elsewhere.message.replace('app.credana.test', 'app.credana.evil');
    const signedPhishing = {
      ...elsewhere,
      message: phishing,
      signature: await stranger().signMessage({ message: phishing }),
    };
    expect(await linkWallet(deps, signedPhishing)).toEqual({ ok: false, reason: 'wrong_domain' });

    const noChallenge = { userId: randomUUID(), message: 'hello', signature: '0x00' };
    expect(await linkWallet(deps, noChallenge)).toEqual({ ok: false, reason: 'invalid_message' });
  });
});
