/**
 * The service boundary lint (docs/architecture.md "Boundaries"): with the repository's own biome.json,
 * Biome fails a service file that imports another service or test code, and a shared/ file that imports
 * a service; it passes imports through shared/ and cross-service imports in tests and scripts/. Probe
 * files are written to a scratch copy of the tree's layout, never into the repository.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
const BIOME = path.join(ROOT, 'node_modules', '.bin', 'biome');
const run = promisify(execFile);

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'credana-boundaries-'));
  await copyFile(path.join(ROOT, 'biome.json'), path.join(dir, 'biome.json'));
  // The schema path is relative to the repository; the scratch copy points at the installed one.
  const config = await readFile(path.join(dir, 'biome.json'), 'utf8');
  await writeFile(
    path.join(dir, 'biome.json'),
    config.replace('./node_modules/', `${path.join(ROOT, 'node_modules')}/`),
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Lints one probe file at `file` (a path as in the repository) importing `from`; the exit code and output. */
async function lint(file: string, from: string): Promise<{ code: number; output: string }> {
  const full = path.join(dir, file);
  await mkdir(path.dirname(full), { recursive: true });
  await writeFile(full, `import { probe } from '${from}';\n\nexport const value = probe;\n`);
  try {
    const { stdout, stderr } = await run(BIOME, ['lint', file], { cwd: dir });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

describe('service boundaries', () => {
  it.each([
    ['ledger-writer/probe-a.ts', '../hot-path/app.ts'],
    ['reconciler/probe-b.ts', '../hot-path/decision/engine.ts'],
    ['settlement/probe-c.ts', '../indexer/store/index.ts'],
    ['hot-path/decision/probe-d.ts', '../../ledger-writer/write-batch.ts'],
    ['supabase/sync/probe-e.ts', '../../reconciler/index.ts'],
    ['indexer/probe-f.ts', '../test/support/db.ts'],
    ['shared/redis/probe-g.ts', '../../hot-path/limits.ts'],
    ['shared/probe-h.ts', '../scripts/chain/testing.ts'],
  ])('fails %s importing %s', async (file, from) => {
    const { code, output } = await lint(file, from);
    expect(code).not.toBe(0);
    expect(output).toContain('lint/style/noRestrictedImports');
  });

  it.each([
    ['ledger-writer/probe-i.ts', '../shared/outbox/records.ts'],
    ['hot-path/decision/probe-j.ts', '../../shared/lifecycle/handler.ts'],
    ['ledger-writer/probe-k.test.ts', '../hot-path/app.ts'],
    ['scripts/probe-l.ts', '../ledger-writer/writer.ts'],
    ['test/probe-m.ts', '../settlement/index.ts'],
  ])('passes %s importing %s', async (file, from) => {
    const { code, output } = await lint(file, from);
    expect(output).not.toContain('noRestrictedImports');
    expect(code).toBe(0);
  });
});
