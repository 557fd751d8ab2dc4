// Proves the withdrawal approval service refuses to start without its secrets, with one line naming
// the missing one and never a value — the process as `npm run start:withdrawals` starts it.
import { describe, expect, it } from 'vitest';
import { runScript } from '../test/support/processes.ts';

const base = { PATH: process.env['PATH'] ?? '', NODE_ENV: 'test', LOG_LEVEL: 'silent' };

describe('npm run start:withdrawals', () => {
  it('exits 78 naming INTERNAL_API_TOKEN, then the signer key (raw or HSM label), when missing', async () => {
    const noToken = await runScript('withdrawals/main.ts', [], base);
    expect([noToken.code, noToken.stderr]).toEqual([78, 'withdrawals: INTERNAL_API_TOKEN is required\n']);
    const noKey = await runScript('withdrawals/main.ts', [], {
      ...base,
      INTERNAL_API_TOKEN: 'a-token-of-our-own-for-this-test',
    });
    expect([noKey.code, noKey.stderr]).toEqual([
      78,
      'withdrawals: WITHDRAWAL_SIGNER_PRIVATE_KEY or WITHDRAWAL_SIGNER_KEY_LABEL is required\n',
    ]);
  }, 90_000); // two children, each starting Node and tsx (slow on a busy two-core machine)
});
