// Proves the checked-in ABIs are the compiled sources: runs `npm run chain:compile -- --check` (the
// pinned solc, OpenZeppelin from node_modules) and fails when shared/chain/contracts/abis.ts is stale.
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..', '..', '..');

describe('generated ABIs', () => {
  it('match the Solidity sources (chain:compile --check)', () => {
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', join(root, 'scripts', 'chain-compile.ts'), '--check'],
      { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    expect(out).toContain('abis.ts is up to date');
  }, 60_000);
});
