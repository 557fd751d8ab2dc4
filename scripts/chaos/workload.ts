/**
 * The chaos workload: the harness plays Stripe (authorization requests with the 2 s deadline, partial
 * and incremental ones, replays, and every lifecycle event delivered late, out of order, twice, and
 * retried until acknowledged) and, without the chain, the indexer (WETH price moves into Postgres and
 * Redis pub/sub); with the chain (`--chain`), chain-workload.ts moves the price, deposits and withdraws
 * on the chain and the real indexer carries it. Every send and every answer goes into the history. All
 * choices come from the seeded stream.
 */
import { performance } from 'node:perf_hooks';
import { publishAsset, publishPriceInForce } from '../../shared/redis/market.ts';
import { seedUser, WETH, wethForBorrowPower } from '../../test/support/fixtures.ts';
import {
  authorizationEvent,
  authorizationRequest,
  sign,
  transactionEvent,
} from '../../test/support/stripe.ts';
import { ChainWorkload } from './chain-workload.ts';
import type {
  ChaosHistory,
  FaultRecord,
  LifecycleKind,
  LifecycleRecord,
  RequestRecord,
  RunbookRecord,
} from './history.ts';
import { deriveRandom, type Random } from './random.ts';
import type { ChaosSystem } from './system.ts';

/** Stripe's deadline for the authorization webhook: an answer later than this is lost (Stripe declines). */
const STRIPE_DEADLINE_MS = 2_000;
/** How long one lifecycle delivery may take before Stripe counts it failed and retries. */
const DELIVERY_TIMEOUT_MS = 5_000;
const RETRY_BACKOFF_MS_MAX = 2_000;
/** How many times the runbook runs `cache:warm` before it gives up (the checker then reports it). */
const CACHE_WARM_ATTEMPTS = 3;
export const INITIAL_PRICE_E8 = 300_000_000_000n;
const PRICE_E8_MIN = 100_000_000_000n;
const PRICE_E8_MAX = 600_000_000_000n;

export interface WorkloadOptions {
  users: number;
  /** Authorization flows running at once. */
  concurrency: number;
}

interface WorkloadUser {
  userId: string;
  cardId: string;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function retry<T>(what: () => Promise<T>, stop: () => boolean): Promise<T | null> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await what();
    } catch {
      if (stop()) return null;
      await sleep(Math.min(100 * 2 ** attempt, 1_000));
    }
  }
}

export class Workload {
  readonly history: ChaosHistory;
  private readonly users: WorkloadUser[] = [];
  private readonly deliveries = new Set<Promise<void>>();
  /** Each lifecycle event's payload as Stripe sent it (the operator's resend sends it again). */
  private readonly payloads = new Map<string, string>();
  /** Round robin over the live hot paths for the operator's resends (no draw from the seeded stream). */
  private resendTurn = 0;
  private stopping = false;
  /** Set when the run gives up waiting (deliveries stop retrying). */
  private abandoned = false;
  private round = 1_000n;
  private priceE8 = INITIAL_PRICE_E8;
  /** The chain side of the workload, when the run has the chain. */
  private chain: ChainWorkload | null = null;

  constructor(
    private readonly system: ChaosSystem,
    private readonly rand: Random,
    private readonly prefix: string,
    private readonly startedMs: number,
    history: ChaosHistory,
  ) {
    this.history = history;
  }

  private now(): number {
    return performance.now() - this.startedMs;
  }

  /** WETH at the initial price, and the users: credit $500–$5,000, some capped by their credit limit. */
  async seed(options: WorkloadOptions & { seed: number }): Promise<void> {
    if (this.system.chain !== null) return this.seedOnChain(options);
    const sql = this.system.database.sql;
    const redis = this.system.redis;
    await sql`insert into assets (id, chain_id, token_address, token_decimals, price_feed_address, price_decimals, ltv_bps,
        liquidation_threshold_bps, price_age_max_s)
      values (${WETH.assetId}, 31337, ${`0x${'we'.padEnd(40, '0')}`}, ${WETH.tokenDecimals}, ${'0x'.padEnd(42, '1')},
        ${WETH.priceDecimals}, ${Number(WETH.ltvBps)}, ${Number(WETH.liquidationThresholdBps)}, ${WETH.priceAgeMaxS})`;
    await publishAsset(redis, this.prefix, WETH);
    await this.writePrice(INITIAL_PRICE_E8);
    for (let i = 0; i < options.users; i++) {
      const creditCents = BigInt(this.rand.int(500, 5_000) * 100);
      const collateralBase = wethForBorrowPower(creditCents, INITIAL_PRICE_E8);
      const creditLimitCents = this.rand.chance(0.3) ? (creditCents * 6n) / 10n : 10_000_000n;
      const { userId, cardId } = await seedUser(sql, {
        collateral: [{ assetId: WETH.assetId, amountBase: collateralBase }],
        creditLimitCents,
      });
      this.users.push({ userId, cardId });
      this.history.users.push({
        userId,
        cardId,
        collateralBase: collateralBase.toString(),
        creditLimitCents: creditLimitCents.toString(),
      });
    }
  }

  /** The same draws as `seed`, but the collateral is deposited on the chain and the indexer credits it. */
  private async seedOnChain(options: WorkloadOptions & { seed: number }): Promise<void> {
    const chain = this.system.chain;
    if (chain === null) return;
    this.chain = new ChainWorkload(
      this.system,
      chain,
      deriveRandom(options.seed, 'chain'),
      this.prefix,
      this.startedMs,
      deriveRandom(options.seed, 'chain-drops'),
      deriveRandom(options.seed, 'chain-withdrawals'),
    );
    const specs = Array.from({ length: options.users }, () => {
      const creditCents = BigInt(this.rand.int(500, 5_000) * 100);
      const creditLimitCents = this.rand.chance(0.3) ? (creditCents * 6n) / 10n : 10_000_000n;
      return { creditCents, creditLimitCents };
    });
    const users = await this.chain.seed(specs);
    for (let i = 0; i < users.length; i++) {
      const u = users[i]!;
      this.users.push({ userId: u.userId, cardId: u.cardId });
      this.history.users.push({
        userId: u.userId,
        cardId: u.cardId,
        collateralBase: u.collateralBase.toString(),
        creditLimitCents: specs[i]!.creditLimitCents.toString(),
        wallet: u.wallet,
      });
    }
    this.history.chain = this.chain.record;
  }

  /** With the chain: waits until Redis showed every chain value, or `timeoutMs`; returns how many did not. */
  async drainChain(timeoutMs: number): Promise<number> {
    return this.chain === null ? 0 : this.chain.pollUntilAcked(timeoutMs);
  }

  private async writePrice(answerE8: bigint): Promise<void> {
    this.round++;
    const updatedAtS = Math.floor(Date.now() / 1000);
    await this.system.database.sql`insert into prices (asset_id, round_id, answer, updated_at)
      values (${WETH.assetId}, ${this.round.toString()}, ${answerE8.toString()}, ${new Date(updatedAtS * 1000)})`;
    await publishPriceInForce(this.system.redis, this.prefix, {
      assetId: WETH.assetId,
      answer: answerE8,
      updatedAtS,
      roundId: this.round,
    });
  }

  /** Runs flows and price moves until `untilMs` (run time), then waits for the flows to finish. */
  async run(options: WorkloadOptions, untilMs: number): Promise<void> {
    const flows = Array.from({ length: options.concurrency }, async () => {
      while (this.now() < untilMs) {
        await this.authorizationFlow(this.rand.pick(this.users));
        await sleep(this.rand.int(0, 150));
      }
    });
    const prices = (async () => {
      if (this.chain !== null) return this.chain.run(untilMs);
      while (this.now() < untilMs) {
        await sleep(this.rand.int(1_000, 4_000));
        if (this.now() >= untilMs) break;
        const factor = BigInt(this.rand.int(80, 120));
        let next = (this.priceE8 * factor) / 100n;
        if (next < PRICE_E8_MIN) next = PRICE_E8_MIN;
        if (next > PRICE_E8_MAX) next = PRICE_E8_MAX;
        this.priceE8 = next;
        const record = { answerE8: next.toString(), sentMs: this.now(), ackedMs: null as number | null };
        this.history.prices.push(record);
        await retry(
          () => this.writePrice(next),
          () => this.abandoned,
        );
        record.ackedMs = this.now();
      }
    })();
    await Promise.all([...flows, prices]);
    this.stopping = true;
  }

  /** Waits until every lifecycle event was acknowledged, or `timeoutMs`; returns how many were not. */
  async drainDeliveries(timeoutMs: number): Promise<number> {
    const until = performance.now() + timeoutMs;
    while (this.deliveries.size > 0 && performance.now() < until) await sleep(100);
    this.abandoned = true;
    await Promise.allSettled([...this.deliveries]);
    return this.history.lifecycle.filter((e) => !e.deliveries.some((d) => d.status === 200)).length;
  }

  private target(): { name: string; url: string } | null {
    const live = this.system.liveHotPaths();
    if (live.length === 0) return null;
    const p = this.rand.pick(live);
    return p.url === null ? null : { name: p.name, url: p.url };
  }

  private async post(
    url: string,
    path: string,
    raw: string,
    timeoutMs: number,
  ): Promise<{ status: number; text: string; error: string | null }> {
    try {
      const res = await fetch(`${url}${path}`, {
        method: 'POST',
        body: raw,
        headers: { 'content-type': 'application/json', 'stripe-signature': sign(raw) },
        signal: AbortSignal.timeout(timeoutMs),
      });
      return { status: res.status, text: await res.text(), error: null };
    } catch (error) {
      return {
        status: 0,
        text: '',
        error: (error as Error).name === 'TimeoutError' ? 'timeout' : String(error),
      };
    }
  }

  private async request(
    user: WorkloadUser,
    o: {
      authorizationId: string;
      amountCents: number;
      controllable: boolean;
      requestHistory: number;
      createdS: number;
    },
  ): Promise<RequestRecord> {
    const event = authorizationRequest({
      cardId: user.cardId,
      amountCents: o.amountCents,
      authorizationId: o.authorizationId,
      controllable: o.controllable,
      requestHistory: o.requestHistory,
      createdS: o.createdS,
    });
    const raw = JSON.stringify(event);
    const target = this.target();
    const record: RequestRecord = {
      eventId: event.id,
      authorizationId: o.authorizationId,
      userId: user.userId,
      incremental: o.requestHistory > 0,
      amountCents: o.amountCents,
      controllable: o.controllable,
      sentMs: this.now(),
      answeredMs: null,
      answer: null,
      target: target?.name ?? 'none',
      error: null,
    };
    this.history.requests.push(record);
    if (target === null) {
      record.error = 'no live hot path';
      return record;
    }
    const res = await this.post(target.url, '/stripe/authorizations', raw, STRIPE_DEADLINE_MS);
    const answer = parseAnswer(res, o.amountCents);
    if (answer === null) record.error = res.error ?? `HTTP ${res.status}: ${res.text.slice(0, 200)}`;
    else {
      record.answer = answer;
      record.answeredMs = this.now();
    }
    // Stripe retrying the request now and then (same event, signed again): the first answer must come back.
    if (this.rand.chance(0.05)) {
      const again = this.target();
      if (again !== null) {
        const replay = {
          eventId: event.id,
          sentMs: this.now(),
          answeredMs: null as number | null,
          answer: null as RequestRecord['answer'],
        };
        this.history.replays.push(replay);
        const r = await this.post(again.url, '/stripe/authorizations', raw, STRIPE_DEADLINE_MS);
        replay.answer = parseAnswer(r, o.amountCents);
        if (replay.answer !== null) replay.answeredMs = this.now();
      }
    }
    return record;
  }

  /** Generates one lifecycle event (Stripe's order) and delivers it in the background. */
  private emit(
    user: WorkloadUser,
    kind: LifecycleKind,
    o: {
      authorizationId: string;
      amountCents: number;
      approved: boolean;
      requestCount: number;
      createdS: number;
    },
  ): void {
    let event: { id: string };
    if (kind === 'capture' || kind === 'refund') {
      event = transactionEvent({
        cardId: user.cardId,
        type: kind,
        amountCents: o.amountCents,
        authorizationId: o.authorizationId,
        createdS: Math.floor(Date.now() / 1000),
      });
    } else {
      const status = (
        {
          created: 'pending',
          updated_pending: 'pending',
          updated_closed: 'closed',
          updated_reversed: 'reversed',
          updated_expired: 'expired',
        } as const
      )[kind];
      event = authorizationEvent({
        type: kind === 'created' ? 'issuing_authorization.created' : 'issuing_authorization.updated',
        cardId: user.cardId,
        authorizationId: o.authorizationId,
        amountCents: o.amountCents,
        approved: o.approved,
        status,
        requestHistory: o.requestCount,
        createdS: o.createdS,
      });
    }
    const record: LifecycleRecord = {
      eventId: event.id,
      kind,
      authorizationId: o.authorizationId,
      userId: user.userId,
      amountCents: o.amountCents,
      approved: o.approved,
      requestCount: o.requestCount,
      generatedMs: this.now(),
      deliveries: [],
    };
    this.history.lifecycle.push(record);
    const raw = JSON.stringify(event);
    this.payloads.set(event.id, raw);
    // Delivery delays reorder the events; a few arrive seconds late; some are delivered twice.
    const delayMs = this.rand.chance(0.05) ? this.rand.int(3_000, 8_000) : this.rand.int(0, 1_500);
    const duplicateAfterMs = this.rand.chance(0.2) ? this.rand.int(0, 3_000) : null;
    const work = (async () => {
      await sleep(delayMs);
      await this.deliverUntilAcked(record, raw);
      if (duplicateAfterMs !== null && !this.abandoned) {
        await sleep(duplicateAfterMs);
        await this.deliverUntilAcked(record, raw);
      }
    })();
    const tracked = work.finally(() => this.deliveries.delete(tracked));
    this.deliveries.add(tracked);
  }

  private async deliverUntilAcked(record: LifecycleRecord, raw: string, resend = false): Promise<void> {
    for (let attempt = 0; !this.abandoned; attempt++) {
      const target = resend ? this.resendTarget() : this.target();
      if (target !== null) {
        const sentMs = this.now();
        const res = await this.post(target.url, '/stripe/events', raw, DELIVERY_TIMEOUT_MS);
        record.deliveries.push({
          target: target.name,
          sentMs,
          ackedMs: res.status === 200 ? this.now() : null,
          status: res.status,
          body: res.error ?? res.text.slice(0, 300),
          ...(resend ? { resend: true } : {}),
        });
        if (res.status === 200) return;
      }
      await sleep(Math.min(200 * 2 ** attempt, RETRY_BACKOFF_MS_MAX));
    }
  }

  private resendTarget(): { name: string; url: string } | null {
    const live = this.system.liveHotPaths();
    if (live.length === 0) return null;
    const p = live[this.resendTurn++ % live.length];
    return p?.url == null ? null : { name: p.name, url: p.url };
  }

  /**
   * The operator's recovery after `fault` (a `redis_empty_restart` that has ended), in the background
   * beside the workload, as docs/operations.md "Losing Redis" says: once Redis answers and the writer's
   * lag is back to 0 (the outbox empty; waited for up to `lagWaitMs`, then on anyway), step 2
   * `cacheWarm()`, then step 3: every lifecycle event acknowledged from `windowMs` before the fault
   * began until it ended, oldest first (Stripe's order of creation), resent one at a time with its
   * event id and payload, signed again, through the delivery path of Stripe's own (any live hot path,
   * `POST /stripe/events`), each until acknowledged. Recorded in `history.runbooks` and on each
   * delivery (`resend`). The drain waits for it like any delivery.
   */
  playRedisLossRunbook(
    fault: FaultRecord,
    o: {
      windowMs: number;
      lagWaitMs: number;
      outboxBacklog: () => Promise<number>;
      cacheWarm: () => Promise<{ exit: string; output: string }>;
    },
  ): void {
    if (fault.startedMs === null || fault.endedMs === null) return;
    const record: RunbookRecord = {
      faultStartedMs: fault.startedMs,
      faultEndedMs: fault.endedMs,
      windowFromMs: fault.startedMs - o.windowMs,
      startedMs: this.now(),
      lagZeroMs: null,
      cacheWarm: null,
      resendStartedMs: null,
      endedMs: null,
      eventIds: [],
    };
    this.history.runbooks ??= [];
    this.history.runbooks.push(record);
    const work = (async () => {
      await retry(
        () => this.system.redis.ping(),
        () => this.abandoned,
      );
      const lagUntil = this.now() + o.lagWaitMs;
      while (record.lagZeroMs === null && this.now() < lagUntil && !this.abandoned) {
        if ((await o.outboxBacklog().catch(() => 1)) === 0) record.lagZeroMs = this.now();
        else await sleep(50);
      }
      // Step 2, run again as an operator would when it failed (e.g. Redis lost its data again under it:
      // seed 2's first run); idempotent.
      const warm = {
        startedMs: this.now(),
        endedMs: null as number | null,
        exit: '',
        output: '',
        attempts: 0,
      };
      record.cacheWarm = warm;
      while (warm.exit !== '0' && warm.attempts < CACHE_WARM_ATTEMPTS && !this.abandoned) {
        if (warm.attempts > 0)
          await retry(
            () => this.system.redis.ping(),
            () => this.abandoned,
          );
        warm.attempts++;
        const result = await o.cacheWarm();
        warm.exit = result.exit;
        warm.output = `${warm.output}${warm.output === '' ? '' : '\n'}attempt ${warm.attempts}: ${result.output.slice(-400)}`;
      }
      warm.endedMs = this.now();
      // The events Stripe lists for the window (acknowledged in it: each may be lost), oldest first.
      const from = record.windowFromMs;
      const to = record.faultEndedMs;
      const events = this.history.lifecycle
        .filter((e) =>
          e.deliveries.some(
            (d) => d.status === 200 && d.ackedMs !== null && d.ackedMs >= from && d.ackedMs <= to,
          ),
        )
        .sort((a, b) => a.generatedMs - b.generatedMs);
      record.eventIds = events.map((e) => e.eventId);
      record.resendStartedMs = this.now();
      for (const e of events) {
        const raw = this.payloads.get(e.eventId);
        if (raw !== undefined) await this.deliverUntilAcked(e, raw, true);
      }
      record.endedMs = this.now();
    })();
    const tracked = work.finally(() => this.deliveries.delete(tracked));
    this.deliveries.add(tracked);
  }

  /** One authorization as Stripe lives it: request, created, increments, then an ending. */
  private async authorizationFlow(user: WorkloadUser): Promise<void> {
    const authorizationId = `iauth_${Math.floor(this.rand.next() * 2 ** 52).toString(36)}${this.history.requests.length.toString(36)}`;
    const createdS = Math.floor(Date.now() / 1000);
    const controllable = this.rand.chance(0.3);
    const first = await this.request(user, {
      authorizationId,
      amountCents: this.rand.int(100, 40_000),
      controllable,
      requestHistory: 0,
      createdS,
    });
    const approved = first.answer?.approved === true;
    let amount = approved ? (first.answer?.amountCents ?? 0) : 0;
    let requests = 1;
    const ev = (kind: LifecycleKind, amountCents: number, ok = true) =>
      this.emit(user, kind, { authorizationId, amountCents, approved: ok, requestCount: requests, createdS });
    ev('created', amount, approved);
    if (!approved || this.stopping) return;
    const pause = () => sleep(this.rand.int(0, 400));

    const increments = this.rand.chance(0.2) ? this.rand.int(1, 2) : 0;
    for (let i = 0; i < increments; i++) {
      await pause();
      const inc = await this.request(user, {
        authorizationId,
        amountCents: this.rand.int(100, 10_000),
        controllable: false,
        requestHistory: requests,
        createdS,
      });
      requests++;
      if (inc.answer?.approved === true) amount += inc.answer.amountCents;
      ev('updated_pending', amount);
    }

    await pause();
    const ending = this.rand.next();
    if (ending < 0.45) {
      // Captures (partial, sometimes split in two, sometimes over the authorized amount), then closed.
      const total = this.rand.chance(0.1)
        ? Math.floor((amount * this.rand.int(100, 115)) / 100)
        : Math.max(1, Math.floor((amount * this.rand.int(50, 100)) / 100));
      const parts =
        this.rand.chance(0.2) && total > 1 ? [Math.floor(total / 2), total - Math.floor(total / 2)] : [total];
      for (const c of parts) {
        ev('capture', c);
        await pause();
      }
      ev('updated_closed', amount);
      if (this.rand.chance(0.3)) {
        await pause();
        ev('refund', this.rand.int(1, total));
      }
    } else if (ending < 0.6) {
      ev('updated_reversed', amount);
    } else if (ending < 0.7) {
      ev('updated_expired', amount);
    } else if (ending < 0.8) {
      ev('capture', Math.max(1, Math.floor(amount / 3)));
    }
    // Otherwise the authorization stays open (its hold stays).
  }
}

function parseAnswer(res: { status: number; text: string }, requestedCents: number): RequestRecord['answer'] {
  if (res.status !== 200) return null;
  try {
    const body = JSON.parse(res.text) as {
      approved?: boolean;
      amount?: number;
      metadata?: { decision_id?: string; reason?: string };
    };
    if (typeof body.approved !== 'boolean') return null;
    return {
      approved: body.approved,
      amountCents: body.approved ? (body.amount ?? requestedCents) : 0,
      reason: body.metadata?.reason ?? '',
      decisionId: body.metadata?.decision_id ?? '',
    };
  } catch {
    return null;
  }
}
