// Proves the withdrawal approval service refuses to start without its secrets, or with a public secret
// while listening beyond loopback, with one line naming the variable and never a value — the process as
// `npm run start:withdrawals` starts it.
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

  it('exits 78 when a public secret (the Supabase CLI JWT secret) meets a non-loopback WITHDRAWALS_HOST', async () => {
    const publicSecret = 'super-secret-jwt-token-with-at-least-32-characters-long';
    const exposed = await runScript('withdrawals/main.ts', [], {
      ...base,
      INTERNAL_API_TOKEN: 'a-token-of-our-own-for-this-test',
      SUPABASE_JWT_SECRET: publicSecret,
      WITHDRAWALS_HOST: '0.0.0.0',
    });
    expect([exposed.code, exposed.stderr]).toEqual([
      78,
      'withdrawals: SUPABASE_JWT_SECRET holds a public secret, refused because WITHDRAWALS_HOST is not a loopback address\n',
    ]);
    expect(exposed.stdout + exposed.stderr).not.toContain(publicSecret);
  }, 60_000);
});
