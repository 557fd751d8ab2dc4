// Proves the Prometheus rule files (rules.yml, and the upkeep rules in upkeep-rules.yml) are valid and do what they say, with the real promtool (Debian package `prometheus`): `promtool check rules` and `promtool test rules` pass; every alert has a unit test that expects it to fire and a runbook section in docs/operations.md. Without promtool on PATH it fails, saying how to install it.
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const HERE = import.meta.dirname;
const ROOT = path.resolve(HERE, '../..');
/** Each rule file, its promtool unit tests, and how many alerts it must hold at least. */
const RULE_FILES = [
  { rules: 'rules.yml', tests: 'rules.test.yml', alertsMin: 11 },
  { rules: 'upkeep-rules.yml', tests: 'upkeep-rules.test.yml', alertsMin: 4 },
] as const;

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

describe.each(RULE_FILES)('ops/prometheus/$rules', ({ rules, tests, alertsMin }) => {
  const RULES = path.join(HERE, rules);
  const TESTS = path.join(HERE, tests);
  const alertNames = [...readFileSync(RULES, 'utf8').matchAll(/^\s+- alert: (\w+)$/gm)].map(
    (m) => m[1] ?? '',
  );

  it('has promtool on PATH', () => {
    expect(
      promtoolInstalled(),
      `promtool is not on PATH: install it (Debian/Ubuntu: apt-get install -y prometheus) to check ops/prometheus/${rules}`,
    ).toBe(true);
  });

  it('passes promtool check rules', async () => {
    const { code, output } = await promtool(['check', 'rules', RULES]);
    expect(output).toContain('SUCCESS');
    expect(code, output).toBe(0);
  });

  it(`passes promtool test rules (${tests})`, async () => {
    const { code, output } = await promtool(['test', 'rules', TESTS]);
    expect(code, output).toBe(0);
  });

  it('tests every alert firing, and has a runbook section for each in docs/operations.md', () => {
    expect(alertNames.length).toBeGreaterThanOrEqual(alertsMin);
    const unitTests = readFileSync(TESTS, 'utf8');
    const runbook = readFileSync(path.join(ROOT, 'docs/operations.md'), 'utf8');
    for (const name of alertNames) {
      // A test case for the alert whose expected alerts are not empty.
      expect(unitTests, name).toMatch(
        new RegExp(`alertname: ${name}\\n\\s+eval_time: \\S+\\n\\s+exp_alerts:\\n`),
      );
      expect(runbook, name).toContain(`\n### ${name}\n`);
    }
  });
});
