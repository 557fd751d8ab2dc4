/**
 * The field names the decision and lifecycle scripts read and write, spelled once: the per-
 * authorization hash (authState), a card's entry in the cards hash, and the outcome fields the scripts
 * add to each outbox entry (read back by the ledger writer, ledger-writer/write-batch.ts). The account
 * hash's names are the cache layout's (`ACCOUNT`, shared/redis/keys.ts). `LUA_FIELDS` has each as a
 * Lua string literal, for splicing into the scripts' source (hot-path/decision/lua.ts,
 * shared/lifecycle/lua.ts).
 */
import { ACCOUNT } from '../redis/keys.ts';
import { luaString } from './lua-source.ts';

/** One authorization's cache state (`userKeys().authState`), short on purpose like the account's. */
export const AUTH_STATE = {
  /** Newest event version applied, or decided by the DECIDE script (request count × 1e10 + created). */
  version: 'ver',
  /** Newest version of an authorization event Stripe sent (not the decisions'). */
  stripeVersion: 'lv',
  /** '1' once a terminal status (closed, reversed, expired) was seen. */
  terminal: 't',
  /** Cents captured through booked transactions. */
  capturedCents: 'cap',
  /** Cents of refunds credited against those captures. */
  refundedCents: 'ref',
  /** Cents of its refunds held for review. */
  reviewHeldCents: 'rvh',
  /**
   * Set once the authorization closed approved: the captured total Stripe listed, or -1 when it listed
   * none. Its captured part stays held until booked.
   */
  closedCapturedCents: 'w',
} as const;

/** Between the codes of the account's blocked merchant categories (`ACCOUNT.blockedMccs`). */
export const BLOCKED_MCCS_SEPARATOR = ',';

/** A card's entry in the cards hash: `status|frozen`, frozen `1` or `0`. */
export const CARD_ENTRY_SEPARATOR = '|';

/** The outcome fields a script appends to an outbox entry beside the record (`r`). */
export const OUTBOX_FIELDS = {
  record: 'r',
  /** Decision: '1' approved, '0' declined. */
  approved: 'ok',
  /** Decision: cents granted. */
  amountCents: 'amt',
  /** Decision: its reason. */
  reason: 'why',
  /** Lifecycle: the hold's change, in cents. */
  holdDeltaCents: 'hd',
  /** Lifecycle: unsettled's change, in cents. */
  unsettledDeltaCents: 'ud',
  /** Lifecycle: cents captured. */
  capturedDeltaCents: 'cd',
  /** Lifecycle: cents held for review (negative: credited after all). */
  reviewCents: 'rv',
  /** Lifecycle: why they were held. */
  reviewReason: 'rw',
} as const;

type Literals<T extends Record<string, string>> = { readonly [K in keyof T]: string };

function literals<T extends Record<string, string>>(names: T): Literals<T> {
  return Object.fromEntries(
    Object.entries(names).map(([key, name]) => [key, luaString(name)]),
  ) as Literals<T>;
}

/** Every name above (and the account's) as a Lua string literal: `LUA_FIELDS.account.holdsCents` is `'hold'`. */
export const LUA_FIELDS = {
  account: literals(ACCOUNT),
  authState: literals(AUTH_STATE),
  outbox: literals(OUTBOX_FIELDS),
  blockedMccsSeparator: luaString(BLOCKED_MCCS_SEPARATOR),
  /** A Lua pattern over a card entry, capturing its status and frozen flag. */
  cardEntryPattern: luaString(`^([^${CARD_ENTRY_SEPARATOR}]*)${CARD_ENTRY_SEPARATOR}(%d)$`),
} as const;
