// Proves the upkeep alert rules (upkeep-rules.yml) are valid and do what they say, with the real promtool (Debian package `prometheus`): `promtool check rules` and `promtool test rules upkeep-rules.test.yml` pass; every alert has a unit test that expects it to fire and a runbook section in docs/operations.md. Without promtool on PATH it fails, saying how to install it.
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const HERE = import.meta.dirname;
const ROOT = path.resolve(HERE, '../..');
const RULES = path.join(HERE, 'upkeep-rules.yml');
const TESTS = path.join(HERE, 'upkeep-rules.test.yml');

function promtool(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile('promtool', args, { cwd: HERE }, (error, stdout, stderr) => {
      resolve({
        code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1,
        output: stdout + stderr,
      });
    });
  });
}

function promtoolInstalled(): boolean {
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const alertNames = [...readFileSync(RULES, 'utf8').matchAll(/^\s+- alert: (\w+)$/gm)].map((m) => m[1] ?? '');

describe('ops/prometheus upkeep rules', () => {
  it('has promtool on PATH', () => {
    expect(
      promtoolInstalled(),
      'promtool is not on PATH: install it (Debian/Ubuntu: apt-get install -y prometheus) to check ops/prometheus/upkeep-rules.yml',
    ).toBe(true);
  });

  it('passes promtool check rules', async () => {
    const { code, output } = await promtool(['check', 'rules', RULES]);
    expect(output).toContain('SUCCESS: 4 rules found');
    expect(code, output).toBe(0);
  });

  it('passes promtool test rules (upkeep-rules.test.yml)', async () => {
    const { code, output } = await promtool(['test', 'rules', TESTS]);
    expect(code, output).toBe(0);
  });

  it('tests every alert firing, and has a runbook section for each in docs/operations.md', () => {
    expect(alertNames).toEqual([
      'CredanaCardEventsDefaultPartitionNotEmpty',
      'CredanaCardEventPartitionsRunningOut',
      'CredanaPartitionWatchMissing',
      'CredanaUserPositionSummaryStale',
    ]);
    const tests = readFileSync(TESTS, 'utf8');
    const runbook = readFileSync(path.join(ROOT, 'docs/operations.md'), 'utf8');
    for (const name of alertNames) {
      expect(tests, name).toMatch(
        new RegExp(`alertname: ${name}\\n\\s+eval_time: \\S+\\n\\s+exp_alerts:\\n`),
      );
      expect(runbook, name).toContain(`\n### ${name}\n`);
    }
  });
});
