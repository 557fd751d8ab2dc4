/**
 * The chain side of the chaos workload (`--chain`): the users' WETH deposited on the chain before the
 * run (their credit comes from the indexer, not from a row the harness writes), then, during the run,
 * deposits, withdrawal requests and cancels from the users' wallets, matured withdrawals finalized with
 * the withdrawal approver's signature, oracle price moves (the feed's
 * owner transmits; the indexer carries them to Postgres and Redis), a block every second, and reorgs
 * (evm_snapshot, blocks on top, evm_revert, a longer other branch). One chain action at a time, so the
 * recorded values of each quantity are in the chain's order. A poller notes when Redis first shows each
 * value: the checker lets a superseded value count until then (checker.ts, "credit").
 */
import { performance } from 'node:perf_hooks';
import type { Address, Hex } from 'viem';
import { credanaVaultAbi } from '../../shared/chain/contracts/index.ts';
import { ensureAccount } from '../../shared/redis/account.ts';
import { ACCOUNT, pricesKey, userKeys } from '../../shared/redis/keys.ts';
import { wethForBorrowPower } from '../../test/support/fixtures.ts';
import { newCardId } from '../../test/support/stripe.ts';
import { localAccount, ROLES, seedAssets, seedUser } from '../chain/harness.ts';
import { CHAIN_CONFIRMATIONS, type ChainSide, LATEST_ANSWER_ABI } from './chain.ts';
import type { ChainHistory, ChainStateRecord, WithdrawalRecord } from './history.ts';
import type { Random } from './random.ts';
import { CHAOS_INTERNAL_API_TOKEN, type ChaosSystem } from './system.ts';

/** The feed's answer at deploy (deploy.ts DEFAULT_COLLATERAL): $3,000. */
export const CHAIN_INITIAL_PRICE_E8 = 300_000_000_000n;
const PRICE_E8_MIN = 100_000_000_000n;
const PRICE_E8_MAX = 600_000_000_000n;
const BLOCK_INTERVAL_MS = 1_000;
const ACK_POLL_MS = 100;
/** How often the harness looks for what the liquidator did to the vault. */
const LIQUIDATION_POLL_MS = 500;
/** Blocks noteLiquidations looks back behind what it saw (a reorg's revert reuses block numbers). */
const LIQUIDATION_LOOKBACK_BLOCKS = 16n;
/** No deep drop in the run's last seconds: the liquidator has time to act before the heal. */
const DROP_QUIET_END_MS = 3_000;
/** How long the user waits for the withdrawal approver's answer (a dashboard's request timeout). */
const APPROVAL_TIMEOUT_MS = 3_000;
/** Hardhat's 20 accounts: users from ROLES.firstUser up to (not including) the anchorer's. */
export const CHAIN_USERS_MAX = ROLES.anchorer - ROLES.firstUser;

export interface ChainUser {
  userId: string;
  cardId: string;
  wallet: Address;
  collateralBase: bigint;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class ChainWorkload {
  readonly record: ChainHistory = {
    states: [],
    reorgs: [],
    failedActions: [],
    pressure: [],
    outsideSpends: [],
    withdrawals: [],
  };
  /** Finalizations in flight (asking the approver, then sending), one per user at most. */
  private readonly finalizing = new Map<string, Promise<void>>();
  private readonly users: ChainUser[] = [];
  /** Serialises the harness's chain actions (and keeps a revert from orphaning one mid-flight). */
  private lock: Promise<unknown> = Promise.resolve();
  private priceE8 = CHAIN_INITIAL_PRICE_E8;
  private stopping = false;
  /** The head noteLiquidations last looked up to. */
  private liquidationsSeenTo = 0n;

  constructor(
    private readonly system: ChaosSystem,
    private readonly chain: ChainSide,
    private readonly rand: Random,
    private readonly prefix: string,
    private readonly startedMs: number,
    /** The deep drops' own stream (drawn apart, so `rand`'s draws stay what they were before them). */
    private readonly dropRand: Random | null = null,
    /** The finalizations' own stream (likewise: `rand` and `dropRand` draw what they did before it). */
    private readonly withdrawRand: Random | null = null,
  ) {}

  private now(): number {
    return performance.now() - this.startedMs;
  }

  private exclusive<T>(what: () => Promise<T>): Promise<T> {
    const next = this.lock.then(what, what);
    this.lock = next.catch(() => undefined);
    return next;
  }

  /**
   * The assets from the deployed contracts, the users with linked wallets and their WETH deposited on
   * the chain for the given credit; then the indexer and the settlement worker start, and this waits
   * until Postgres and Redis show every deposit and the price.
   */
  async seed(specs: { creditCents: bigint; creditLimitCents: bigint }[]): Promise<ChainUser[]> {
    if (specs.length > CHAIN_USERS_MAX) throw new Error(`--chain runs at most ${CHAIN_USERS_MAX} users`);
    const sql = this.system.database.sql;
    await seedAssets(sql, this.chain.contracts);
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i]!;
      const wallet = localAccount(ROLES.firstUser + i).address;
      const userId = await seedUser(sql, {
        chainId: this.chain.contracts.chainId,
        wallet,
        creditLimitCents: spec.creditLimitCents,
      });
      await sql`update users set daily_limit_cents = 1000000000 where id = ${userId}`;
      const cardId = newCardId();
      await sql`insert into cards (id, user_id, status, frozen) values (${cardId}, ${userId}, 'active', false)`;
      const collateralBase = wethForBorrowPower(spec.creditCents, CHAIN_INITIAL_PRICE_E8);
      await this.chain.actions.deposit(wallet, 'WETH', collateralBase);
      // Funds for the run's deposits: a deposit is then one transaction.
      await this.chain.actions.fund(wallet, 'WETH', collateralBase * 100n);
      this.users.push({ userId, cardId, wallet, collateralBase });
    }
    await this.system.startChainWorkers();
    await this.chain.actions.mine(CHAIN_CONFIRMATIONS + 1);
    const until = performance.now() + 120_000;
    for (const u of this.users) {
      for (;;) {
        const [row] = await sql<{ c: string }[]>`select collateral_base::text as c from positions
          where user_id = ${u.userId} and asset_id = 'WETH'`;
        if (row?.c === u.collateralBase.toString()) break;
        if (performance.now() > until)
          throw new Error(`the indexer did not credit user ${u.userId}'s deposit`);
        await sleep(100);
      }
      await ensureAccount(this.system.redis, sql, this.prefix, u.userId);
    }
    for (;;) {
      const price = await this.system.redis.hget(pricesKey(this.prefix), 'WETH');
      if (price !== null && BigInt((JSON.parse(price) as { answer: string }).answer) === this.priceE8) break;
      if (performance.now() > until) throw new Error('the indexer did not publish the WETH price');
      await sleep(100);
    }
    const at = this.now();
    const initial = (quantity: string, value: bigint): ChainStateRecord => ({
      quantity,
      value: value.toString(),
      cause: 'initial',
      sentMs: 0,
      ackedMs: at,
      block: null,
    });
    this.record.states.push(initial('price', this.priceE8));
    for (const u of this.users) {
      this.record.states.push(initial(`collateral:${u.userId}`, u.collateralBase));
      this.record.states.push(initial(`pending:${u.userId}`, 0n));
    }
    return this.users;
  }

  /** Chain actions, blocks and reorgs until `untilMs` (run time); Redis's view is polled throughout. */
  async run(untilMs: number): Promise<void> {
    const poller = (async () => {
      while (!this.stopping) {
        await this.pollRedis().catch(() => undefined);
        await sleep(ACK_POLL_MS);
      }
    })();
    const blocks = (async () => {
      while (this.now() < untilMs) {
        await sleep(BLOCK_INTERVAL_MS);
        await this.exclusive(() => this.chain.actions.mine(1)).catch(() => undefined);
      }
    })();
    const drops = this.deepDrops(untilMs);
    const finalizations = this.finalizations(untilMs);
    const liquidations = (async () => {
      while (this.now() < untilMs) {
        await sleep(LIQUIDATION_POLL_MS);
        await this.exclusive(() => this.noteLiquidations()).catch(() => undefined);
      }
    })();
    let reorg: { snapshot: Hex; atMs: number; head: bigint; endMs: number } | null = null;
    while (this.now() < untilMs) {
      await sleep(this.rand.int(300, 1_200));
      if (reorg !== null && this.now() >= reorg.endMs) {
        const r = reorg;
        reorg = null;
        await this.exclusive(() => this.revert(r));
        continue;
      }
      const roll = this.rand.next();
      const user = this.rand.pick(this.users);
      if (roll < 0.35) await this.exclusive(() => this.movePrice());
      else if (roll < 0.6) await this.exclusive(() => this.deposit(user));
      else if (roll < 0.88) await this.exclusive(() => this.withdrawalRequestOrCancel(user));
      else if (reorg === null && this.now() < untilMs - 5_000) {
        const endMs = this.now() + this.rand.int(1_500, 4_000);
        reorg = await this.exclusive(async () => ({
          snapshot: await this.chain.actions.snapshot(),
          atMs: this.now(),
          head: await this.chain.actions.head(),
          endMs,
        }));
      }
    }
    if (reorg !== null) {
      const r = reorg;
      await this.exclusive(() => this.revert(r));
    }
    await blocks;
    await drops;
    await liquidations;
    await finalizations;
    await Promise.all(this.finalizing.values());
    await this.lock;
    this.stopping = true;
    await poller;
  }

  /**
   * Pressure for the liquidator, from `dropRand` alone: now and then a spend from outside the run's
   * card traffic (30–90 % of what the user may still borrow: on a loaded machine few captures settle,
   * so few accounts carry debt otherwise), and now and then a deep price drop aimed at a user who
   * carries on-chain debt: the price that puts that user's health factor at 0.70–0.95 (at the
   * liquidation threshold). Without indebted users (or when the price is already that low) no drop is
   * sent. Nothing in the run's last seconds, so the liquidator acts before the heal.
   */
  private async deepDrops(untilMs: number): Promise<void> {
    const rand = this.dropRand;
    if (rand === null) return;
    const thresholdBps = await this.system.database.sql<{ t: number }[]>`
      select liquidation_threshold_bps as t from assets where id = 'WETH'`.then((r) => BigInt(r[0]?.t ?? 0));
    let spends = 0;
    while (this.now() < untilMs - DROP_QUIET_END_MS) {
      await sleep(rand.int(500, 2_000));
      // The first is always a spend: a 10 s run has room for a few of these only.
      const roll = spends === 0 ? 0 : rand.next();
      const pick = rand.next();
      const pct = BigInt(rand.int(30, 90));
      const healthPct = BigInt(rand.int(70, 95));
      if (this.now() >= untilMs - DROP_QUIET_END_MS || thresholdBps === 0n) continue;
      if (roll < 0.45) {
        const user = this.users[Math.floor(pick * this.users.length)]!;
        const ref = `chaos-outside-${++spends}`;
        await this.exclusive(() =>
          this.attempt('outside spend', async () => {
            const state = await this.chain.vaultState(user.wallet);
            const power = await this.chain.borrowPowerUsdc(user.wallet);
            const amount = power > state.debtUsdc ? ((power - state.debtUsdc) * pct) / 100n : 0n;
            if (amount < 1_000_000n) return;
            const sentMs = this.now();
            const block = await this.chain.recordOutsideSpend(user.wallet, amount, ref);
            this.record.outsideSpends?.push({
              userId: user.userId,
              amountUsdc: amount.toString(),
              sentMs,
              minedMs: this.now(),
              block: block.toString(),
            });
            this.record.pressure?.push(
              `${this.now().toFixed(0)} ms outside spend ${amount} USDC units to ${user.userId} (block ${block})`,
            );
          }),
        );
      } else if (roll < 0.9) {
        await this.exclusive(() =>
          this.attempt('deep drop', async () => {
            const indebted: { debt: bigint; collateral: bigint }[] = [];
            for (const u of this.users) {
              const state = await this.chain.vaultState(u.wallet);
              if (state.debtUsdc > 0n && state.collateralBase > 0n)
                indebted.push({ debt: state.debtUsdc, collateral: state.collateralBase });
            }
            if (indebted.length === 0) return;
            const target = indebted[Math.floor(pick * indebted.length)]!;
            // health = collateral × price × threshold / debt (WETH 18 decimals, price 8, USDC 6).
            let next = (healthPct * target.debt * 10n ** 22n) / (target.collateral * thresholdBps);
            if (next < PRICE_E8_MIN) next = PRICE_E8_MIN;
            if (next >= this.priceE8) return;
            const sentMs = this.now();
            const block = await this.chain.actions.setPrice('WETH', next);
            this.priceE8 = next;
            this.record.pressure?.push(`${sentMs.toFixed(0)} ms deep drop to ${next} (block ${block})`);
            await this.push('price', next, 'price', sentMs, block);
          }),
        );
      }
    }
  }

  /**
   * Records the collateral and pending withdrawal a liquidation (the liquidator's, not the harness's)
   * left: run under the chain lock, so the records stay in the chain's order. A value it records was
   * made before it was read: its sentMs (the read) is late, which only narrows when it may count.
   */
  async noteLiquidations(): Promise<void> {
    // One getLogs a poll; the vault is read only after a liquidation. From a few blocks back: a reorg
    // revert reuses block numbers.
    const head = await this.chain.actions.head();
    const from =
      this.liquidationsSeenTo > LIQUIDATION_LOOKBACK_BLOCKS
        ? this.liquidationsSeenTo - LIQUIDATION_LOOKBACK_BLOCKS
        : 0n;
    const logs = await this.chain.actions.publicClient.getContractEvents({
      address: this.chain.contracts.vault,
      abi: credanaVaultAbi,
      eventName: 'Liquidated',
      fromBlock: from,
      toBlock: head,
    });
    this.liquidationsSeenTo = head;
    if (logs.length === 0) return;
    const sentMs = this.now();
    for (const u of this.users) {
      const state = await this.chain.vaultState(u.wallet);
      const last = (quantity: string) =>
        [...this.record.states].reverse().find((s) => s.quantity === quantity)?.value;
      if (last(`collateral:${u.userId}`) !== state.collateralBase.toString())
        await this.push(`collateral:${u.userId}`, state.collateralBase, 'liquidation', sentMs, null);
      if (last(`pending:${u.userId}`) !== state.pendingBase.toString())
        await this.push(`pending:${u.userId}`, state.pendingBase, 'liquidation', sentMs, null);
    }
  }

  /** Keeps polling Redis after the run (until `stop`), so late values are acknowledged. */
  async pollUntilAcked(timeoutMs: number): Promise<number> {
    const until = performance.now() + timeoutMs;
    // A liquidation after the run: its values are the chain's last ones (looked for from the start).
    this.liquidationsSeenTo = 0n;
    await this.noteLiquidations().catch(() => undefined);
    for (;;) {
      await this.pollRedis().catch(() => undefined);
      const left = this.record.states.filter((s) => s.ackedMs === null).length;
      if (left === 0 || performance.now() > until) return left;
      await sleep(ACK_POLL_MS);
    }
  }

  private async push(
    quantity: string,
    value: bigint,
    cause: ChainStateRecord['cause'],
    sentMs: number,
    block: bigint | null,
  ): Promise<void> {
    const last = [...this.record.states].reverse().find((s) => s.quantity === quantity);
    if (last?.value === value.toString() && cause !== 'price') return;
    this.record.states.push({
      quantity,
      value: value.toString(),
      cause,
      sentMs,
      ackedMs: null,
      block: block === null ? null : block.toString(),
    });
  }

  private async attempt(what: string, action: () => Promise<void>): Promise<void> {
    try {
      await action();
    } catch (error) {
      this.record.failedActions.push(`${this.now().toFixed(0)} ms ${what}: ${String(error).slice(0, 200)}`);
    }
  }

  private movePrice(): Promise<void> {
    return this.attempt('price', async () => {
      const factor = BigInt(this.rand.int(80, 120));
      let next = (this.priceE8 * factor) / 100n;
      if (next < PRICE_E8_MIN) next = PRICE_E8_MIN;
      if (next > PRICE_E8_MAX) next = PRICE_E8_MAX;
      const sentMs = this.now();
      const block = await this.chain.actions.setPrice('WETH', next);
      this.priceE8 = next;
      await this.push('price', next, 'price', sentMs, block);
    });
  }

  private deposit(user: ChainUser): Promise<void> {
    return this.attempt('deposit', async () => {
      const amount = (user.collateralBase * BigInt(this.rand.int(10, 50))) / 100n;
      const sentMs = this.now();
      const block = await this.chain.actions.depositOnly(user.wallet, 'WETH', amount);
      const state = await this.chain.vaultState(user.wallet);
      await this.push(`collateral:${user.userId}`, state.collateralBase, 'deposit', sentMs, block);
    });
  }

  /**
   * Users taking out withdrawals, from `withdrawRand` alone: every 0.4–1.5 s, among the users whose
   * pending request's delay has run (the vault's `readyAt` reached by the head's timestamp) and who are
   * not finalizing already, one is picked and finalizes in the background (asking the approver must not
   * hold the chain lock); with none matured, a user with nothing pending requests 10–40 % of the
   * collateral (so requests reach maturity within a short run). The main stream cancels a matured
   * request only while its finalization is under way (a race, as a user's second tab would make); its
   * requests, its cancels of younger ones and the reorgs go on meanwhile.
   */
  private async finalizations(untilMs: number): Promise<void> {
    const rand = this.withdrawRand;
    if (rand === null) return;
    while (this.now() < untilMs) {
      await sleep(rand.int(400, 1_500));
      const pick = rand.next();
      if (this.now() >= untilMs) break;
      // Each user not finalizing: a matured request, or null when nothing is pending.
      const users = await this.exclusive(async () => {
        const head = await this.chain.actions.publicClient.getBlock({ blockTag: 'latest' });
        const out: { user: ChainUser; pending: { amount: bigint; requestId: bigint } | null }[] = [];
        for (const user of this.users) {
          if (this.finalizing.has(user.userId)) continue;
          const pending = await this.chain.actions.pendingWithdrawal(user.wallet, 'WETH');
          if (pending.amount === 0n) out.push({ user, pending: null });
          else if (pending.readyAt <= head.timestamp) out.push({ user, pending });
        }
        return out;
      }).catch(() => []);
      const ripe = users.filter((m) => m.pending !== null);
      const chosen = ripe[Math.floor(pick * ripe.length)];
      if (chosen?.pending == null) {
        // Nothing to take out: a user with nothing pending asks to withdraw, to finalize later.
        const idle = users.filter((m) => m.pending === null);
        const user = idle[Math.floor(pick * idle.length)]?.user;
        const pct = BigInt(rand.int(10, 40));
        if (user === undefined) continue;
        await this.exclusive(() =>
          this.attempt('withdrawal', async () => {
            const before = await this.chain.vaultState(user.wallet);
            if (before.pendingBase !== 0n) return;
            const amount = (before.collateralBase * pct) / 100n;
            if (amount === 0n) return;
            const sentMs = this.now();
            const block = await this.chain.actions.requestWithdrawal(user.wallet, 'WETH', amount);
            const after = await this.chain.vaultState(user.wallet);
            await this.push(`pending:${user.userId}`, after.pendingBase, 'withdrawal_request', sentMs, block);
          }),
        );
        continue;
      }
      const flight = this.finalize(chosen.user, chosen.pending)
        .catch((error: unknown) => {
          this.record.failedActions.push(
            `${this.now().toFixed(0)} ms finalize: ${String(error).slice(0, 200)}`,
          );
        })
        .finally(() => this.finalizing.delete(chosen.user.userId));
      this.finalizing.set(chosen.user.userId, flight);
    }
  }

  /**
   * What a user does to take out a matured withdrawal: asks the withdrawal approver for its approval
   * (`POST /withdrawals/approvals`, the internal route, as the API process does for the dashboard),
   * then, approved, sends `finalizeWithdrawal` with it from the wallet (under the chain lock, so the
   * collateral and pending values it leaves are recorded in the chain's order). Everything is recorded
   * in `withdrawals`; a refusal or a revert is an outcome, not a failure.
   */
  private async finalize(user: ChainUser, pending: { amount: bigint; requestId: bigint }): Promise<void> {
    const rec: WithdrawalRecord = {
      userId: user.userId,
      requestId: pending.requestId.toString(),
      amountBase: pending.amount.toString(),
      askSentMs: this.now(),
      askAnsweredMs: null,
      answer: 'error',
      reason: '',
    };
    this.record.withdrawals?.push(rec);
    const approver = this.system.processes.find((p) => p.kind === 'withdrawals');
    let approval: { deadline: bigint; signature: Hex } | null = null;
    try {
      const url = approver?.url ?? null;
      if (url === null) throw new Error('the withdrawal approver is down');
      const response = await fetch(`${url}/withdrawals/approvals`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${CHAOS_INTERNAL_API_TOKEN}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ userId: user.userId, assetId: 'WETH' }),
        signal: AbortSignal.timeout(APPROVAL_TIMEOUT_MS),
      });
      const text = await response.text();
      rec.askAnsweredMs = this.now();
      const body = JSON.parse(text) as {
        approved?: boolean;
        reason?: string;
        amount?: string;
        requestId?: string;
        deadline?: string;
        signature?: Hex;
      };
      if (response.status === 200 && body.approved === true && body.signature !== undefined) {
        rec.answer = 'approved';
        rec.reason = 'approved';
        rec.approvedAmountBase = body.amount ?? '';
        rec.approvedRequestId = body.requestId ?? '';
        rec.deadline = body.deadline ?? '';
        approval = { deadline: BigInt(body.deadline ?? '0'), signature: body.signature };
      } else if (response.status === 409) {
        rec.answer = 'refused';
        rec.reason = body.reason ?? 'unknown';
      } else rec.reason = `status ${response.status}: ${text.slice(0, 120)}`;
    } catch (error) {
      const cause = error instanceof Error && error.cause !== undefined ? ` (${String(error.cause)})` : '';
      rec.reason = `${String(error)}${cause}`.slice(0, 200);
    }
    if (approval === null) return;
    const signed = approval;
    await this.exclusive(async () => {
      rec.finalizeSentMs = this.now();
      let block: bigint | null = null;
      try {
        block = await this.chain.actions.finalizeWithdrawalWith(
          user.wallet,
          'WETH',
          signed.deadline,
          signed.signature,
        );
        rec.finalize = 'mined';
        rec.finalizeBlock = block.toString();
      } catch (error) {
        rec.finalize = 'reverted';
        rec.finalizeError = String(error).slice(0, 200);
      }
      rec.finalizeDoneMs = this.now();
      const sentMs = rec.finalizeSentMs;
      await this.attempt('withdrawal finalize', async () => {
        const state = await this.chain.vaultState(user.wallet);
        await this.push(
          `collateral:${user.userId}`,
          state.collateralBase,
          'withdrawal_finalize',
          sentMs,
          block,
        );
        await this.push(`pending:${user.userId}`, state.pendingBase, 'withdrawal_finalize', sentMs, block);
      });
    });
  }

  private withdrawalRequestOrCancel(user: ChainUser): Promise<void> {
    return this.attempt('withdrawal', async () => {
      const before = await this.chain.vaultState(user.wallet);
      const sentMs = this.now();
      let block: bigint;
      let cause: ChainStateRecord['cause'];
      if (before.pendingBase === 0n) {
        const amount = (before.collateralBase * BigInt(this.rand.int(10, 50))) / 100n;
        if (amount === 0n) return;
        block = await this.chain.actions.requestWithdrawal(user.wallet, 'WETH', amount);
        cause = 'withdrawal_request';
      } else {
        // A matured request is its user's to take out (`finalizations`): left alone unless that is
        // already under way, when the cancel races it.
        if (this.withdrawRand !== null && !this.finalizing.has(user.userId)) {
          const pending = await this.chain.actions.pendingWithdrawal(user.wallet, 'WETH');
          const head = await this.chain.actions.publicClient.getBlock({ blockTag: 'latest' });
          if (pending.readyAt <= head.timestamp) return;
        }
        block = await this.chain.actions.cancelWithdrawal(user.wallet, 'WETH');
        cause = 'withdrawal_cancel';
      }
      const after = await this.chain.vaultState(user.wallet);
      await this.push(`pending:${user.userId}`, after.pendingBase, cause, sentMs, block);
    });
  }

  /** evm_revert to the snapshot, then a longer branch: what the orphaned blocks did is undone. */
  private async revert(r: { snapshot: Hex; atMs: number; head: bigint }): Promise<void> {
    await this.attempt('reorg', async () => {
      const headBefore = await this.chain.actions.head();
      const revertedMs = this.now();
      await this.chain.actions.revert(r.snapshot);
      const depth = Number(headBefore - r.head);
      this.record.reorgs.push({ snapshotMs: r.atMs, revertedMs, depth });
      // The other branch: longer than the orphaned one, so every node takes it.
      await this.chain.actions.mine(depth + 1);
      const answer = (await this.chain.actions.publicClient.readContract({
        address: this.chain.weth.aggregator,
        abi: LATEST_ANSWER_ABI,
        functionName: 'latestAnswer',
      })) as bigint;
      this.priceE8 = answer;
      await this.push('price', answer, 'reorg', revertedMs, null);
      for (const u of this.users) {
        const state = await this.chain.vaultState(u.wallet);
        await this.push(`collateral:${u.userId}`, state.collateralBase, 'reorg', revertedMs, null);
        await this.push(`pending:${u.userId}`, state.pendingBase, 'reorg', revertedMs, null);
      }
    });
  }

  /** Acknowledges each value Redis shows now (and every earlier unacknowledged value of its quantity). */
  private async pollRedis(): Promise<void> {
    const redis = this.system.redis;
    const observed = new Map<string, string>();
    const price = await redis.hget(pricesKey(this.prefix), 'WETH');
    if (price !== null) observed.set('price', (JSON.parse(price) as { answer: string }).answer);
    for (const u of this.users) {
      const [c, w] = await redis.hmget(
        userKeys(this.prefix, u.userId).account,
        `${ACCOUNT.collateralPrefix}WETH`,
        `${ACCOUNT.pendingWithdrawalPrefix}WETH`,
      );
      if (c != null) observed.set(`collateral:${u.userId}`, c);
      observed.set(`pending:${u.userId}`, w ?? '0');
    }
    const at = this.now();
    for (const [quantity, value] of observed) {
      const records = this.record.states.filter((s) => s.quantity === quantity);
      let k = -1;
      for (let i = records.length - 1; i >= 0; i--) {
        if (records[i]!.value === value) {
          k = i;
          break;
        }
      }
      for (let i = 0; i <= k; i++) if (records[i]!.ackedMs === null) records[i]!.ackedMs = at;
    }
  }
}
