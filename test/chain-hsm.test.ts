// Proves the chain signers work with their keys inside a real SoftHSM2 token and a real Hardhat chain: a key generated in the token holds the vault's settler and withdrawal-signer roles; the settlement worker — in process and as `npm run start:settlement` configured only with SETTLER_KEY_LABEL, PKCS11_* and a PIN file — records captures on chain in transactions sent from the token's address, and loses no nonce when the token refuses to sign mid-run; the vault accepts a withdrawal approval signed in the token; the liquidator liquidates from the token's address; a wrong PIN, an unknown key, a missing PKCS#11 library and a raw key in production stop the process with exit 78 and one line.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address, LocalAccount } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLiquidator } from '../liquidator/index.ts';
import { type ChainHarness, seedAssets, seedUser, startChainHarness } from '../scripts/chain/harness.ts';
import { createTestIndexer, silentLogger, spawnSettlement } from '../scripts/chain/testing.ts';
import { createSettlementWorker } from '../settlement/index.ts';
import { credanaVaultAbi, testTokenAbi, writeContractsFile } from '../shared/chain/contracts/index.ts';
import {
  ethereumAccount,
  generateSecp256k1KeyPair,
  openToken,
  pkcs11Signer,
  type Token,
} from '../shared/hsm/index.ts';
import { pkcs11js } from '../shared/hsm/pkcs11.ts';
import { signWithdrawalApproval } from '../withdrawals/approval.ts';
import { redisEnv, setUpServices, type TestServices } from './support/db.ts';
import { runScript } from './support/processes.ts';
import { createSoftHsmToken, type SoftHsmToken } from './support/softhsm.ts';

const ETH = 10n ** 18n;
let softHsm: SoftHsmToken;
let token: Token;
let settler: LocalAccount;
let withdrawalSigner: LocalAccount;
let liquidator: LocalAccount;
let services: TestServices;
let chain: ChainHarness;
let userId: string;
let wallet: Address;
let contractsFile: string;

const sql = () => services.database.sql;

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A capture booked as the ledger writer books it (`capture:<ipi>`): a balanced transfer, unsettled. */
async function bookCapture(cents: bigint): Promise<string> {
  const ipi = `ipi_${randomBytes(8).toString('hex')}`;
  const [transfer] =
    await sql()`insert into ledger_transfers (ref, kind, user_id) values (${`capture:${ipi}`}, 'capture', ${userId}) returning id`;
  await sql()`insert into ledger_entries (transfer_id, account, user_id, amount_cents) values
    (${transfer?.['id'] as string}, 'user_unsettled', ${userId}, ${cents.toString()}),
    (${transfer?.['id'] as string}, 'program_card_spend', null, ${(-cents).toString()})`;
  await sql()`update credit_accounts set unsettled_cents = unsettled_cents + ${cents.toString()} where user_id = ${userId}`;
  return ipi;
}

/** The transaction that recorded `ref` on the vault, if any: its sender and status. */
async function recordedBy(ref: string): Promise<{ from: Address; status: string } | null> {
  const logs = await chain.publicClient.getContractEvents({
    address: chain.contracts.vault,
    abi: credanaVaultAbi,
    eventName: 'SpendRecorded',
    fromBlock: 0n,
  });
  const log = logs.find((l) => l.args.ref === ref);
  if (log === undefined) return null;
  const receipt = await chain.publicClient.getTransactionReceipt({ hash: log.transactionHash });
  return { from: receipt.from, status: receipt.status };
}

/** Turns a key's permission to sign off and on in the token: an HSM refusing mid-run, for real. */
function setCanSign(label: string, allowed: boolean): void {
  token.run((p, s) =>
    p.C_SetAttributeValue(s, token.findObject(p, s, pkcs11js.CKO_PRIVATE_KEY, label), [
      { type: pkcs11js.CKA_SIGN, value: allowed },
    ]),
  );
}

beforeAll(async () => {
  softHsm = createSoftHsmToken('credana-chain');
  softHsm.useInThisProcess();
  token = openToken({ modulePath: softHsm.modulePath, tokenLabel: softHsm.tokenLabel, pin: softHsm.pin });
  generateSecp256k1KeyPair(token, 'settler');
  generateSecp256k1KeyPair(token, 'withdrawal-signer');
  generateSecp256k1KeyPair(token, 'liquidator');
  settler = await ethereumAccount(pkcs11Signer(token, 'settler'));
  withdrawalSigner = await ethereumAccount(pkcs11Signer(token, 'withdrawal-signer'));
  liquidator = await ethereumAccount(pkcs11Signer(token, 'liquidator'));
  [services, chain] = await Promise.all([
    setUpServices(),
    startChainHarness({
      settler: settler.address,
      withdrawalSigner: withdrawalSigner.address,
      liquidator: liquidator.address,
      withdrawalDelayS: 0,
    }),
  ]);
  // The token's address starts empty: fund it on the local chain, as an operator funds a new key.
  await chain.testClient.setBalance({ address: settler.address, value: 10n * ETH });
  await chain.testClient.setBalance({ address: liquidator.address, value: 10n * ETH });
  await seedAssets(sql(), chain.contracts);
  wallet = chain.account(3);
  userId = await seedUser(sql(), { chainId: chain.contracts.chainId, wallet, creditLimitCents: 10_000_000n });
  await chain.deposit(wallet, 'WETH', 2n * ETH);
  contractsFile = join(mkdtempSync(join(tmpdir(), 'credana-hsm-')), 'contracts.json');
  writeContractsFile(contractsFile, chain.contracts);
});

afterAll(async () => {
  token?.close();
  await chain?.stop();
  await services?.close();
  softHsm?.destroy();
});

describe('chain signers with their keys in the HSM', () => {
  it('settles a capture on chain from the token address, in process', async () => {
    const ref = await bookCapture(4_321n);
    const worker = createSettlementWorker({
      sql: services.sqlFor('credana_settlement'),
      client: chain.publicClient,
      account: settler,
      vault: chain.contracts.vault,
      chainId: chain.contracts.chainId,
      logger: silentLogger,
      maxFeePerGasWei: 200n * 10n ** 9n,
    });
    expect(await worker.runOnce()).toMatchObject({ claimed: 1, sent: 1 });
    expect(await recordedBy(ref)).toEqual({ from: settler.address.toLowerCase(), status: 'success' });
    const debt = await chain.publicClient.readContract({
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      functionName: 'debtOf',
      args: [wallet],
    });
    expect(debt).toBe(43_210_000n);
  });

  it('keeps its nonce when the token refuses to sign, so the next round settles (no gap)', async () => {
    const ref = await bookCapture(555n);
    const nonceBefore = await chain.publicClient.getTransactionCount({
      address: settler.address,
      blockTag: 'pending',
    });
    const worker = createSettlementWorker({
      sql: services.sqlFor('credana_settlement'),
      client: chain.publicClient,
      account: settler,
      vault: chain.contracts.vault,
      chainId: chain.contracts.chainId,
      logger: silentLogger,
      maxFeePerGasWei: 200n * 10n ** 9n,
    });
    // One round with a nonce taken from the node, so the worker's own counter is in play.
    setCanSign('settler', false);
    try {
      await expect(worker.runOnce()).rejects.toThrow(/CKR_KEY_FUNCTION_NOT_PERMITTED/);
    } finally {
      setCanSign('settler', true);
    }
    const [unsent] = await sql()`select status, transaction_hash from settlements where ref = ${ref}`;
    expect(unsent).toEqual({ status: 'pending', transaction_hash: null });
    expect(await worker.runOnce()).toMatchObject({ sent: 1 });
    expect(await recordedBy(ref)).toEqual({ from: settler.address.toLowerCase(), status: 'success' });
    const [row] = await sql()`select nonce from settlements where ref = ${ref}`;
    expect(Number(row?.['nonce'])).toBe(nonceBefore);
  });

  it('settles from `npm run start:settlement` configured with a key label and a PIN file only', async () => {
    const ref = await bookCapture(1_234n);
    const child = spawnSettlement(
      {
        ...softHsm.env,
        ...softHsm.configEnv,
        SETTLER_KEY_LABEL: 'settler',
        DATABASE_URL: services.urlFor('credana_settlement'),
        CHAIN_RPC_URL: chain.url,
        CHAIN_ID: String(chain.contracts.chainId),
        CONTRACTS_FILE: contractsFile,
        ...redisEnv(services),
        REDIS_KEY_PREFIX: services.prefix,
      },
      ['--poll-interval-ms', '50'],
    );
    try {
      await waitFor(async () => (await recordedBy(ref)) !== null, 'the spawned worker to record the capture');
    } finally {
      await child.kill('SIGTERM');
    }
    expect(await recordedBy(ref)).toEqual({ from: settler.address.toLowerCase(), status: 'success' });
    expect(child.output()).toContain(`"key":"pkcs11:${softHsm.tokenLabel}/settler"`);
    expect(child.output()).not.toContain(softHsm.pin);
  }, 120_000);

  it('signs a withdrawal approval in the token that the vault accepts', async () => {
    const user = chain.account(4);
    await chain.deposit(user, 'WETH', ETH);
    await chain.requestWithdrawal(user, 'WETH', ETH / 4n);
    const pending = await chain.pendingWithdrawal(user, 'WETH');
    const deadline = (await chain.publicClient.getBlock()).timestamp + 600n;
    const token = chain.token('WETH');
    const message = { user, token, amount: pending.amount, requestId: pending.requestId, deadline };
    const signature = await signWithdrawalApproval(
      withdrawalSigner,
      chain.contracts.chainId,
      chain.contracts.vault,
      message,
    );
    // The settler's key does not hold the role: the vault tells the two apart by recovering the signer.
    const wrong = await signWithdrawalApproval(
      settler,
      chain.contracts.chainId,
      chain.contracts.vault,
      message,
    );
    await expect(chain.finalizeWithdrawalWith(user, 'WETH', deadline, wrong)).rejects.toThrow(
      /InvalidApproval/,
    );
    await chain.finalizeWithdrawalWith(user, 'WETH', deadline, signature);
    expect((await chain.pendingWithdrawal(user, 'WETH')).amount).toBe(0n);
  });

  it('liquidates an unhealthy account with the liquidator key in the token (approval and liquidation signed there)', async () => {
    const weak = chain.account(5);
    await seedUser(sql(), { chainId: chain.contracts.chainId, wallet: weak });
    await chain.deposit(weak, 'WETH', ETH);
    // The debt is recorded by the settler's key in the token, through viem's own wallet client.
    const recorded = await chain.walletClient.writeContract({
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      functionName: 'recordSpend',
      args: [weak, 2_000n * 10n ** 6n, `ipi_hsm_${randomBytes(4).toString('hex')}`],
      account: settler,
      chain: chain.walletClient.chain,
    });
    expect((await chain.publicClient.getTransactionReceipt({ hash: recorded })).from).toBe(
      settler.address.toLowerCase(),
    );
    // The USDC the liquidator repays with, minted to the token's address.
    await chain.walletClient.writeContract({
      address: chain.contracts.usdc.address,
      abi: testTokenAbi,
      functionName: 'mint',
      args: [liquidator.address, 10_000n * 10n ** 6n],
      account: chain.account(0),
      chain: chain.walletClient.chain,
    });
    const { indexer } = createTestIndexer(services, chain, { confirmations: 2 });
    try {
      await chain.mine(2);
      await indexer.syncToHead();
      await chain.setPrice('WETH', 2_200n * 10n ** 8n); // health 0.9075
      await indexer.syncToHead();
      const run = createLiquidator({
        sql: services.sqlFor('credana_liquidator'),
        client: chain.publicClient,
        account: liquidator,
        contracts: chain.contracts,
        logger: silentLogger,
        maxFeePerGasWei: 200n * 10n ** 9n,
      });
      // The token refuses once (before even the USDC approval is signed); the next round must not skip
      // a nonce, or the approval would wait forever behind the gap.
      setCanSign('liquidator', false);
      try {
        await expect(run.runOnce()).rejects.toThrow(/CKR_KEY_FUNCTION_NOT_PERMITTED/);
      } finally {
        setCanSign('liquidator', true);
      }
      expect(await run.runOnce()).toMatchObject({ unhealthy: 1, sent: 1 });
    } finally {
      await indexer.stop();
    }
    const events = (
      await chain.publicClient.getContractEvents({
        address: chain.contracts.vault,
        abi: credanaVaultAbi,
        eventName: 'Liquidated',
        fromBlock: 0n,
      })
    ).filter((l) => (l.args.user as string).toLowerCase() === weak.toLowerCase());
    expect(events).toHaveLength(1);
    const receipt = await chain.publicClient.getTransactionReceipt({
      hash: events[0]?.transactionHash as `0x${string}`,
    });
    expect(receipt.from).toBe(liquidator.address.toLowerCase());
    const debt = await chain.publicClient.readContract({
      address: chain.contracts.vault,
      abi: credanaVaultAbi,
      functionName: 'debtOf',
      args: [weak],
    });
    expect(debt).toBe(0n);
  }, 120_000);

  it('stops the worker with exit 78 and one line: wrong PIN, unknown key, raw key in production, no PKCS#11 library', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'credana-hsm-pin-'));
    const wrongPin = `wrong-${randomBytes(6).toString('hex')}`;
    const wrongPinFile = join(dir, 'pin');
    writeFileSync(wrongPinFile, wrongPin);
    chmodSync(wrongPinFile, 0o600);
    const base = {
      PATH: process.env['PATH'] ?? '',
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      ...softHsm.env,
      ...softHsm.configEnv,
      DATABASE_URL: 'postgres://postgres@127.0.0.1:1/never',
      CONTRACTS_FILE: contractsFile,
    };
    const [badPin, noKey, rawInProduction, noModule] = await Promise.all([
      runScript('settlement/main.ts', [], {
        ...base,
        SETTLER_KEY_LABEL: 'settler',
        PKCS11_PIN_FILE: wrongPinFile,
      }),
      runScript('settlement/main.ts', [], { ...base, SETTLER_KEY_LABEL: 'nobody' }),
      runScript('settlement/main.ts', [], {
        PATH: process.env['PATH'] ?? '',
        NODE_ENV: 'production',
        STRIPE_WEBHOOK_SECRETS: `whsec_${randomBytes(12).toString('hex')}`,
        SETTLER_PRIVATE_KEY: `0x${'5a'.repeat(32)}`,
      }),
      runScript('settlement/main.ts', [], {
        ...base,
        SETTLER_KEY_LABEL: 'settler',
        PKCS11_MODULE: '/nonexistent/libpkcs11.so',
      }),
    ]);
    expect(noModule.code).toBe(78);
    expect(noModule.stderr).toMatch(
      /^settlement: hsm: cannot load the PKCS#11 module \/nonexistent\/libpkcs11\.so: [^\n]+\n$/,
    );
    expect([badPin.code, badPin.stderr]).toEqual([
      78,
      `settlement: hsm: login to token "${softHsm.tokenLabel}" refused: CKR_PIN_INCORRECT\n`,
    ]);
    expect(badPin.stdout + badPin.stderr).not.toContain(wrongPin);
    expect([noKey.code, noKey.stderr]).toEqual([
      78,
      `settlement: hsm: no public key labelled "nobody" on token "${softHsm.tokenLabel}"\n`,
    ]);
    expect(rawInProduction.code).toBe(78);
    expect(rawInProduction.stderr).toBe(
      'config: SETTLER_PRIVATE_KEY is invalid: a raw private key is refused in production; keep the key in the HSM and name it with SETTLER_KEY_LABEL (docs/operations.md)\n',
    );
    expect(rawInProduction.stderr).not.toContain('5a5a');
  }, 120_000);
});
