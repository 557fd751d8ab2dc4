// Proves .env.example is complete and true: it lists exactly the variables the config reads, and
// its values parse into a valid config (the "working local default" promise) — for explicit local
// development only: without its NODE_ENV line its public webhook secret is refused.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, ConfigError, loadConfig } from './config.ts';

const text = readFileSync(new URL('../.env.example', import.meta.url), 'utf8');
const entries = [...text.matchAll(/^([A-Z0-9_]+)=(.*)$/gm)].map((m) => [m[1] ?? '', m[2] ?? ''] as const);

describe('.env.example', () => {
  it('lists every config variable exactly once', () => {
    const names = entries.map(([name]) => name);
    expect([...names].sort()).toEqual([...CONFIG_VARIABLES].sort());
    expect(new Set(names).size).toBe(names.length);
  });

  it('parses into a valid config as it stands', () => {
    const config = loadConfig(Object.fromEntries(entries));
    expect(config.HOT_PATH_PORT).toBe(8787);
    expect(config.DECISION_BUDGET_MS).toBe(400);
    expect(config.NODE_ENV).toBe('development');
    expect(config.REDIS_REQUIRED_APPENDFSYNC).toBe('always');
  });

  it('is refused as a deployment once its NODE_ENV line is dropped (unset means production)', () => {
    const withoutNodeEnv = Object.fromEntries(entries.filter(([name]) => name !== 'NODE_ENV'));
    expect(() => loadConfig(withoutNodeEnv)).toThrow(ConfigError);
    expect(() => loadConfig(withoutNodeEnv)).toThrow(/^config: STRIPE_WEBHOOK_SECRETS is invalid: /);
  });
});
