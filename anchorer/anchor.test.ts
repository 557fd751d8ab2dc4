// Proves the audit chain anchored on-chain catches what the database's own check cannot: on a real
// Hardhat chain and Postgres, a superuser's rewrite of an old audit row with every later hash (and the
// head) recomputed passes audit_log_verify() and the books job, and is found by the anchors job; and the
// anchors tolerate none yet, an unconfirmed one, a reorg that drops one, and a SIGKILLed anchorer.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import type { Address, PublicClient } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anchorsJob } from '../reconciler/anchors.ts';
import { booksJob } from '../reconciler/books.ts';
import type { JobOutcome } from '../reconciler/types.ts';
import { type ChainHarness, localAccount, ROLES, startChainHarness } from '../scripts/chain/harness.ts';
import { auditRowHash, readAuditRows, readConfirmedAnchors } from '../shared/chain/anchor-verify.ts';
import { auditAnchorAbi } from '../shared/chain/contracts/index.ts';
import { createRpc } from '../shared/chain/rpc/index.ts';
import { insertAudit } from '../shared/db/queries/ledger.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { spawnService } from '../test/support/processes.ts';
import { asSuperuserWithoutTriggers } from '../test/support/reconcile.ts';
import { type AnchorerOptions, createAnchorer, readAuditHead } from './index.ts';

const silent = pino({ level: 'silent' });
const CONFIRMATIONS = 2;
let services: TestServices;
let chain: ChainHarness;
let client: PublicClient;
let contract: Address;
/** The audit ids anchored by the second test (ids are drawn by the trigger, not 1, 2, 3…). */
let anchored: string[] = [];
const headOf = async (s: TestServices) => (await readAuditHead(s.database.sql)).sequence;

beforeAll(async () => {
  [services, chain] = await Promise.all([
    setUpServices(),
    startChainHarness({ anchorer: localAccount(ROLES.anchorer).address }),
  ]);
  contract = chain.contracts.auditAnchor as Address;
  client = createRpc({ url: chain.url, chainId: chain.contracts.chainId, retryDelayMsBase: 20 }).client;
}, 60_000);

afterAll(async () => {
  await chain?.stop();
  await services?.close();
});

/** The anchorer runs as credana_reconciliation, the one service role that may read audit_log_head. */
function anchorerOptions(extra: Partial<AnchorerOptions> = {}): AnchorerOptions {
  return {
    sql: services.sqlFor('credana_reconciliation'),
    client,
    account: privateKeyToAccount(localAccount(ROLES.anchorer).privateKey),
    contract,
    chainId: chain.contracts.chainId,
    logger: silent,
    maxFeePerGasWei: 200n * 1_000_000_000n,
    intervalMs: 50,
    ...extra,
  };
}

async function audit(n: number, tag: string): Promise<void> {
  await services.database.sql.begin((tx) =>
    insertAudit(
      tx,
      Array.from({ length: n }, (_, i) => ({
        actor: 'test',
        action: 'ops.freeze_card',
        entityType: 'card',
        entityId: `ic_${tag}_${i}`,
        // Text the TypeScript recomputation must print exactly as jsonb does.
        data: {
          reason: `line one\nline "two"\t\\ ${tag} – ünïcödé \u0001`,
          amountCents: BigInt(1000 + i),
          nested: { z: 1, a: [true, null] },
        },
      })),
    ),
  );
}

async function anchorsRun(nowMs = Date.now()): Promise<JobOutcome> {
  return anchorsJob({ client, contract, confirmations: CONFIRMATIONS, staleAfterS: 3_600 })({
    sql: services.sqlFor('credana_reconciliation'),
    cursor: null,
    now: () => nowMs,
    checkpoint: async () => {},
  });
}

const kinds = (outcome: JobOutcome) => outcome.findings.map((f) => f.kind);
const anchorCount = () =>
  client.readContract({
    address: contract,
    abi: auditAnchorAbi,
    functionName: 'anchorCount',
    blockTag: 'latest',
  });

describe('the anchor contract', () => {
  it('is writable only by the anchorer, and only with increasing sequences', async () => {
    const head = `0x${'ab'.repeat(32)}` as const;
    const stranger = localAccount(ROLES.settler).address;
    await expect(
      chain.walletClient.writeContract({
        address: contract,
        abi: auditAnchorAbi,
        functionName: 'anchor',
        args: [1n, head],
        account: stranger,
        chain: chain.walletClient.chain,
      }),
    ).rejects.toThrow(/AccessControlUnauthorizedAccount|reverted/);
    // simulate as the anchorer: a zero head is refused; nothing is written by a simulation.
    await expect(
      client.simulateContract({
        address: contract,
        abi: auditAnchorAbi,
        functionName: 'anchor',
        args: [1n, `0x${'00'.repeat(32)}`],
        account: localAccount(ROLES.anchorer).address,
      }),
    ).rejects.toThrow(/EmptyHead/);
    expect(await anchorCount()).toBe(0n);
  });
});

describe('anchoring and verification', () => {
  it('verifies with no anchor yet, then reports rows that waited too long for one', async () => {
    await audit(3, 'a');
    expect(kinds(await anchorsRun())).toEqual([]);
    expect(kinds(await anchorsRun(Date.now() + 2 * 3_600_000))).toEqual(['audit_anchor_stale']);
  });

  it('recomputes every hash outside the database exactly as the trigger did', async () => {
    const rows = await readAuditRows(services.database.sql, 0n, 100);
    expect(rows.length).toBeGreaterThanOrEqual(3);
    for (const row of rows) expect(auditRowHash(row)).toBe(row.hash);
  });

  it('anchors the head once, counts it only when confirmed, and re-anchors only when the head moved', async () => {
    const anchorer = createAnchorer(anchorerOptions());
    const head1 = await headOf(services);
    const first = await anchorer.runOnce();
    expect(first.status).toBe('anchored');
    expect(first.headSequence).toBe(head1);
    expect((await anchorer.runOnce()).status).toBe('unchanged');
    // Append-only: the same sequence again (a stale duplicate send) is refused by the contract.
    await expect(
      client.simulateContract({
        address: contract,
        abi: auditAnchorAbi,
        functionName: 'anchor',
        args: [head1, `0x${'cd'.repeat(32)}`],
        account: localAccount(ROLES.anchorer).address,
      }),
    ).rejects.toThrow(/SequenceNotIncreasing/);
    // Mined but not yet confirmed: not counted.
    expect((await readConfirmedAnchors(client, contract, CONFIRMATIONS)).anchors).toEqual([]);
    await chain.mine(CONFIRMATIONS);
    const confirmed = await readConfirmedAnchors(client, contract, CONFIRMATIONS);
    expect(confirmed.anchors.map((a) => a.sequence)).toEqual([head1]);
    const [row] = await services.database.sql<
      { hash: string }[]
    >`select hash from audit_log where id = ${head1.toString()}`;
    expect(confirmed.anchors[0]?.head).toBe(row?.hash);
    expect(kinds(await anchorsRun())).toEqual([]);

    await audit(4, 'b');
    const head2 = await headOf(services);
    expect((await anchorer.runOnce()).status).toBe('anchored');
    await chain.mine(CONFIRMATIONS);
    expect(
      (await readConfirmedAnchors(client, contract, CONFIRMATIONS)).anchors.map((a) => a.sequence),
    ).toEqual([head1, head2]);
    anchored = [head1, head2].map(String);
    expect(kinds(await anchorsRun())).toEqual([]);
  });

  it('finds a superuser rewrite of an old row with every later hash recomputed, which the database check misses', async () => {
    await audit(2, 'c'); // two rows after the last anchor
    // The attack: triggers off, the second row's content changed, every later hash recomputed in order
    // with the database's own function, the head moved to the new last hash.
    await asSuperuserWithoutTriggers(
      services.databaseUrl,
      `update audit_log set data = jsonb_set(data, '{reason}', '"nothing happened"')
       where id = (select id from audit_log order by id offset 1 limit 1)`,
    );
    await asSuperuserWithoutTriggers(
      services.databaseUrl,
      `do $$ declare r record; first record; prev text; begin
         select id, hash into first from audit_log order by id limit 1;
         prev := first.hash;
         for r in select * from audit_log where id > first.id order by id loop
           update audit_log set prev_hash = prev,
             hash = audit_log_row_hash(prev, r.id, r.at, r.actor, r.action, r.entity_type, r.entity_id, r.data)
             where id = r.id returning hash into prev;
         end loop;
         update audit_log_head set last_hash = prev where singleton;
       end $$`,
    );
    // The database's own checks are fooled: the chain is consistent, just not the one written.
    expect(await services.database.sql`select * from audit_log_verify()`).toEqual([]);
    const books = await booksJob()({
      sql: services.sqlFor('credana_reconciliation'),
      cursor: JSON.stringify({ phase: 'audit', after: '0', prevHash: null }),
      now: Date.now,
      checkpoint: async () => {},
    });
    expect(books.findings).toEqual([]);
    // The anchors are not: both anchored rows now hash differently from what was anchored.
    const outcome = await anchorsRun();
    expect(
      outcome.findings.filter((f) => f.kind === 'audit_anchor_mismatch').map((f) => f['auditId']),
    ).toEqual(anchored);
    expect(kinds(outcome).filter((k) => k !== 'audit_anchor_mismatch')).toEqual([]);
  });

  it('finds an edit blessed by a replaced hash function, by recomputing outside the database', async () => {
    // A second superuser trick: edit the last row's content and swap
    // audit_log_row_hash for one that returns whatever the row already stores.
    await asSuperuserWithoutTriggers(
      services.databaseUrl,
      `update audit_log set actor = 'someone-else' where id = (select max(id) from audit_log)`,
    );
    await asSuperuserWithoutTriggers(
      services.databaseUrl,
      `create or replace function audit_log_row_hash(prev_hash text, id bigint, at timestamptz, actor text,
         action text, entity_type text, entity_id text, data jsonb) returns text language sql stable
         as $f$ select hash from public.audit_log a where a.id = $2 $f$`,
    );
    expect(await services.database.sql`select * from audit_log_verify()`).toEqual([]);
    const last = String(await headOf(services));
    const outcome = await anchorsRun();
    expect(outcome.findings.filter((f) => f.kind === 'audit_row_tampered').map((f) => f['auditId'])).toEqual([
      last,
    ]);
  });
});

describe('anchors and failures', () => {
  let fresh: TestServices;
  beforeAll(async () => {
    fresh = await setUpServices();
  });
  afterAll(async () => {
    await fresh?.close();
  });
  const onFresh = (extra: Partial<AnchorerOptions> = {}) =>
    anchorerOptions({ sql: fresh.sqlFor('credana_reconciliation'), ...extra });
  const lastSequence = () =>
    client.readContract({
      address: contract,
      abi: auditAnchorAbi,
      functionName: 'lastSequence',
      blockTag: 'latest',
    });

  it('re-anchors after a reorg drops the anchor, and counts it once', async () => {
    // The contract already holds sequences up to 7 from the other database; this one's head must pass it.
    await fresh.database.sql.begin((tx) =>
      insertAudit(
        tx,
        Array.from({ length: 12 }, (_, i) => ({
          actor: 't',
          action: 'x',
          entityType: 'e',
          entityId: String(i),
          data: {},
        })),
      ),
    );
    const head = await headOf(fresh);
    const before = await anchorCount();
    const snapshot = await chain.snapshot();
    expect((await createAnchorer(onFresh()).runOnce()).status).toBe('anchored');
    expect(await lastSequence()).toBe(head);
    // The reorg: back to before the anchor, and a longer fork without it.
    await chain.revert(snapshot);
    await chain.mine(CONFIRMATIONS + 2);
    expect(await anchorCount()).toBe(before);
    const confirmed = await readConfirmedAnchors(client, contract, CONFIRMATIONS);
    expect(confirmed.anchors.some((a) => a.sequence === head)).toBe(false);
    // The next round sees the head unanchored and no transaction of its own pending: sends again.
    expect((await createAnchorer(onFresh()).runOnce()).status).toBe('anchored');
    await chain.mine(CONFIRMATIONS);
    const after = await readConfirmedAnchors(client, contract, CONFIRMATIONS);
    expect(after.anchors.filter((a) => a.sequence === head)).toHaveLength(1);
    expect(await anchorCount()).toBe(before + 1n);
  });

  it('a real anchorer SIGKILLed right after its broadcast: the next round waits for it and never sends a second', async () => {
    await fresh.database.sql.begin((tx) =>
      insertAudit(tx, [{ actor: 't', action: 'x', entityType: 'e', entityId: 'crash', data: {} }]),
    );
    const head = await headOf(fresh);
    const dir = mkdtempSync(path.join(tmpdir(), 'credana-anchor-'));
    const contractsFile = path.join(dir, 'contracts.json');
    writeFileSync(contractsFile, JSON.stringify(chain.contracts));
    const before = await anchorCount();
    await chain.testClient.setAutomine(false);
    try {
      const child = await spawnService(
        'anchorer/main.ts',
        {
          NODE_ENV: 'test',
          LOG_LEVEL: 'info',
          DATABASE_URL: fresh.urlFor('credana_reconciliation'),
          CHAIN_RPC_URL: chain.url,
          CONTRACTS_FILE: contractsFile,
          AUDIT_ANCHOR_PRIVATE_KEY: localAccount(ROLES.anchorer).privateKey,
        },
        'audit anchorer started',
        { args: ['--crash-after', 'broadcast'] },
      );
      await new Promise<void>((resolve) => {
        if (child.child.exitCode !== null || child.child.signalCode !== null) resolve();
        else child.child.once('exit', () => resolve());
      });
      expect(child.child.signalCode).toBe('SIGKILL');
      expect(child.output()).toContain('crash fault injected after broadcast');
    } catch (error) {
      await chain.testClient.setAutomine(true);
      throw error;
    }
    // The transaction is on the wire, not mined. A new round must not send a second one.
    const report = await createAnchorer(onFresh()).runOnce();
    expect(report.status).toBe('pending');
    await chain.testClient.setAutomine(true);
    await chain.mine(1);
    expect(await lastSequence()).toBe(head);
    expect((await createAnchorer(onFresh()).runOnce()).status).toBe('unchanged');
    expect(await anchorCount()).toBe(before + 1n);
    rmSync(dir, { recursive: true, force: true });
  });
});
