/**
 * Wallet linking: a user proves they control an address by signing an EIP-4361 (Sign-In with
 * Ethereum) message that we issued, with a one-time nonce kept in Redis. The signature is verified
 * with viem (EOAs, and smart accounts through ERC-1271/6492 when given a client). One address belongs
 * to one user. Linking adopts the address's already-indexed events, under the same lock and rules as
 * the indexer, so collateral deposited before linking counts (once confirmed) and nothing twice.
 *
 * Outcomes are values (a refusal is not an exception): see `LinkResult`.
 */
import type { Logger } from 'pino';
import type postgres from 'postgres';
import { type Address, getAddress, type Hex, isAddress, type PublicClient } from 'viem';
import { createSiweMessage, generateSiweNonce, parseSiweMessage, verifySiweMessage } from 'viem/siwe';
import { z } from 'zod';
import { LIMITS } from '../../shared/chain/limits.ts';
import { lockChainApply } from '../../shared/db/locks.ts';
import { insertAudit } from '../../shared/db/queries/ledger.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { confirmedTipOf } from '../apply/effects.ts';
import { type ApplyContext, applyEffects, newTouched, planApply, type Touched } from '../apply/index.ts';
import type { CacheWriter } from '../apply/redis.ts';
import { markApplied, readCursor, setEventsUser, unattributedEventsOf } from '../store/index.ts';

export const LINK_STATEMENT = 'Link this wallet to my Credana card account.';

export interface LinkSettings {
  /** The site asking for the signature (RFC 3986 authority), e.g. "app.credana.com". */
  domain: string;
  /** The page that asked, e.g. "https://app.credana.com/wallets". */
  uri: string;
  chainId: number;
}

const nonceKey = (prefix: string, nonce: string) => `${prefix}siwe:${nonce}`;

/**
 * Issues a message for `userId` to sign with `address`. The nonce is single-use and expires.
 *
 * @example
 *   const { message } = await createLinkChallenge(redis, prefix, settings, { userId, address });
 *   const signature = await wallet.signMessage({ message });
 *   await linkWallet(deps, { userId, message, signature });
 */
export async function createLinkChallenge(
  redis: Redis,
  prefix: string,
  settings: LinkSettings,
  request: { userId: string; address: string; nowMs?: number },
): Promise<{ message: string; nonce: string; expiresAt: Date }> {
  if (!isAddress(request.address, { strict: false })) throw new TypeError('address is not an EVM address');
  const nowMs = request.nowMs ?? Date.now();
  const nonce = generateSiweNonce();
  const expiresAt = new Date(nowMs + LIMITS.siweNonceTtlS * 1000);
  const address = getAddress(request.address);
  await redis.set(
    nonceKey(prefix, nonce),
    JSON.stringify({ userId: request.userId, address: address.toLowerCase(), chainId: settings.chainId }),
    'EX',
    LIMITS.siweNonceTtlS,
  );
  const message = createSiweMessage({
    domain: settings.domain,
    address,
    statement: LINK_STATEMENT,
    uri: settings.uri,
    version: '1',
    chainId: settings.chainId,
    nonce,
    issuedAt: new Date(nowMs),
    expirationTime: expiresAt,
  });
  return { message, nonce, expiresAt };
}

export type LinkRefusal =
  | 'invalid_message'
  | 'wrong_domain'
  | 'wrong_chain'
  | 'expired'
  | 'nonce_unknown'
  | 'bad_signature'
  | 'wallet_taken';

export type LinkResult =
  | { ok: true; address: Address; linked: 'new' | 'existing'; adopted: number; touched: Touched }
  | { ok: false; reason: LinkRefusal };

export interface LinkDeps {
  sql: postgres.Sql;
  redis: Redis;
  prefix: string;
  settings: LinkSettings;
  /** Verifies signatures; its node also answers ERC-1271 calls for smart-account wallets. */
  client: PublicClient;
  /** The indexer's apply context (assets) and the cursor it writes: see loadApplyContext. */
  ctx: ApplyContext;
  /** Writes the adopted events' effects through to Redis after the commit (apply/redis.ts). */
  cache?: Pick<CacheWriter, 'write'>;
  logger?: Logger;
}

const linkRequest = z.object({
  userId: z.string().uuid(),
  message: z.string().min(1).max(LIMITS.siweMessageBytesMax),
  signature: z.string().regex(/^0x[0-9a-fA-F]+$/, 'must be hex'),
  nowMs: z.number().int().optional(),
});

const storedNonce = z.object({ userId: z.string(), address: z.string(), chainId: z.number() });

/** Verifies a signed link message and links the wallet. Refusals are values; only faults throw. */
export async function linkWallet(deps: LinkDeps, input: z.input<typeof linkRequest>): Promise<LinkResult> {
  const parsedInput = linkRequest.safeParse(input);
  if (!parsedInput.success) return { ok: false, reason: 'invalid_message' };
  const { userId, message, signature } = parsedInput.data;
  const nowMs = parsedInput.data.nowMs ?? Date.now();
  const fields = parseSiweMessage(message);
  if (
    fields.address === undefined ||
    fields.nonce === undefined ||
    fields.issuedAt === undefined ||
    fields.statement !== LINK_STATEMENT ||
    fields.version !== '1'
  ) {
    return { ok: false, reason: 'invalid_message' };
  }
  if (fields.domain !== deps.settings.domain || fields.uri !== deps.settings.uri)
    return { ok: false, reason: 'wrong_domain' };
  if (fields.chainId !== deps.settings.chainId) return { ok: false, reason: 'wrong_chain' };
  const ageMs = nowMs - fields.issuedAt.getTime();
  const expired = fields.expirationTime !== undefined && fields.expirationTime.getTime() <= nowMs;
  if (expired || ageMs > LIMITS.siweMessageAgeMaxS * 1000 || ageMs < -60_000)
    return { ok: false, reason: 'expired' };

  // The nonce is consumed before the signature is checked, so a message is tried at most once.
  const raw = await deps.redis.getdel(nonceKey(deps.prefix, fields.nonce));
  const stored = raw === null ? null : storedNonce.safeParse(JSON.parse(raw));
  const address = fields.address.toLowerCase() as Address;
  if (
    stored === null ||
    !stored.success ||
    stored.data.userId !== userId ||
    stored.data.address !== address ||
    stored.data.chainId !== deps.settings.chainId
  ) {
    return { ok: false, reason: 'nonce_unknown' };
  }
  const valid = await verifySiweMessage(deps.client, {
    message,
    signature: signature as Hex,
    address: fields.address,
    domain: deps.settings.domain,
    nonce: fields.nonce,
    time: new Date(nowMs),
  }).catch(() => false);
  if (!valid) return { ok: false, reason: 'bad_signature' };

  const touched = newTouched();
  const outcome = await deps.sql.begin(async (tx) => {
    await lockChainApply(tx, deps.ctx.chainId);
    const [owner] = await tx<{ user_id: string; inserted: boolean }[]>`
      insert into wallets (chain_id, address, user_id) values (${deps.ctx.chainId}, ${address}, ${userId})
      on conflict (chain_id, address) do update set chain_id = wallets.chain_id
      returning user_id::text, (xmax = 0) as inserted`;
    if (owner === undefined || owner.user_id !== userId) return 'wallet_taken' as const;
    if (!owner.inserted) return 'existing' as const;
    // Adopt what the indexer stored for this address while nobody owned it.
    const events = await unattributedEventsOf(tx, deps.ctx.chainId, address);
    for (const event of events) event.userId = userId;
    await setEventsUser(tx, deps.ctx.chainId, events, userId);
    const cursor = await readCursor(tx, deps.ctx.cursorId);
    const tip = cursor === null ? -1n : confirmedTipOf(cursor.number, deps.ctx.confirmations);
    const { apply } = await planApply(deps.ctx, events, [], tip, new Map(), async () => []);
    await markApplied(tx, deps.ctx.chainId, apply);
    await applyEffects(tx, deps.ctx, apply, 1n, touched);
    await insertAudit(tx, [
      {
        actor: `user:${userId}`,
        action: 'wallet_linked',
        entityType: 'wallet',
        entityId: `${deps.ctx.chainId}:${address}`,
        data: { adoptedEvents: events.length, appliedEvents: apply.length },
      },
    ]);
    return events.length;
  });
  if (outcome === 'wallet_taken') return { ok: false, reason: 'wallet_taken' };
  if (outcome === 'existing') return { ok: true, address, linked: 'existing', adopted: 0, touched };
  await deps.cache?.write(touched);
  deps.logger?.info({ userId, address, adopted: outcome }, 'wallet linked');
  return { ok: true, address, linked: 'new', adopted: outcome, touched };
}
