// Proves what dev uses to show the stack: service output is prefixed line by line even when lines arrive split across chunks (never mid-line), and the generated Prometheus configuration is valid for the real promtool (Debian package `prometheus`), naming every target and the repository's rules.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { lineStream, prometheusConfig } from './observe.ts';

async function through(chunks: string[], prefix: string): Promise<string> {
  let out = '';
  for await (const piece of Readable.from(chunks.map((c) => Buffer.from(c))).pipe(lineStream(prefix)))
    out += String(piece);
  return out;
}

describe('lineStream', () => {
  it('prefixes whole lines, joining a line split across chunks, and flushes an unterminated last line', async () => {
    expect(await through(['{"a":1}\n{"b"', ':2}\npartial', ' end'], '[svc] ')).toBe(
      '[svc] {"a":1}\n[svc] {"b":2}\n[svc] partial end\n',
    );
  });
});

describe('prometheusConfig', () => {
  it('is a configuration promtool accepts, scraping every target with the repository rules', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'credana-observe-'));
    try {
      const rulesFile = path.resolve(import.meta.dirname, '../../ops/prometheus/rules.yml');
      const text = prometheusConfig({
        targets: [
          { job: 'hot-path', url: 'http://127.0.0.1:41234/metrics' },
          { job: 'ledger-writer', url: 'http://127.0.0.1:8788/metrics' },
        ],
        rulesFile,
      });
      const parsed = parse(text) as {
        rule_files: string[];
        scrape_configs: { job_name: string; metrics_path: string; static_configs: { targets: string[] }[] }[];
      };
      expect(parsed.rule_files).toEqual([rulesFile]);
      expect(
        parsed.scrape_configs.map((c) => [c.job_name, c.metrics_path, c.static_configs[0]?.targets]),
      ).toEqual([
        ['hot-path', '/metrics', ['127.0.0.1:41234']],
        ['ledger-writer', '/metrics', ['127.0.0.1:8788']],
      ]);
      const file = path.join(dir, 'prometheus.yml');
      writeFileSync(file, text);
      // Throws (failing the test) when promtool is missing or rejects the file.
      const output = execFileSync('promtool', ['check', 'config', file], { encoding: 'utf8' });
      expect(output).toContain('SUCCESS');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
