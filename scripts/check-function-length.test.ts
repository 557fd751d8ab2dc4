// Proves the function-length check counts a function's lines from its first token to its last (a 120-line function passes, a 121-line one fails, whether declared, arrow, method or nested), skips tests, test support, drizzle/ and the generated ABIs, and that the command exits 1 naming the file and line — on fixture trees written to a temporary folder, parsed by the real compiler.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FUNCTION_LINES_MAX, findLongFunctions, listCheckedFiles } from './check-function-length.ts';

const script = resolve(import.meta.dirname, 'check-function-length.ts');
const tsx = resolve(import.meta.dirname, '../node_modules/.bin/tsx');

/** A function declaration exactly `lines` lines long, from `function` to the closing brace. */
function declaredFunction(name: string, lines: number): string {
  const body = Array.from({ length: lines - 2 }, (_, i) => `  const v${i} = ${i};`);
  return [
    `// A leading comment is not part of the function.`,
    `export function ${name}() {`,
    ...body,
    '}',
    '',
  ].join('\n');
}

/** An arrow function assigned to a const, exactly `lines` lines long. */
function arrowFunction(name: string, lines: number): string {
  const body = Array.from({ length: lines - 2 }, (_, i) => `  void ${i};`);
  return [`export const ${name} = async (a: number): Promise<void> => {`, ...body, '};', ''].join('\n');
}

/** A class method nested in a factory; the method is `lines` long, the factory two more. */
function nestedMethod(name: string, lines: number): string {
  const body = Array.from({ length: lines - 2 }, (_, i) => `      void ${i};`);
  return [
    'export function outer() {',
    '  return class {',
    `    ${name}() {`,
    ...body,
    '    }',
    '  };',
    '}',
    '',
  ].join('\n');
}

const roots: string[] = [];
function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'function-length-'));
  roots.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

describe('check-function-length', () => {
  it('passes a 120-line function and fails a 121-line one', () => {
    expect(FUNCTION_LINES_MAX).toBe(120);
    const root = tree({
      'a/ok.ts': declaredFunction('fits', 120),
      'a/long.ts': declaredFunction('tooLong', 121),
    });
    expect(findLongFunctions(root, listCheckedFiles(root))).toEqual([
      { file: 'a/long.ts', name: 'tooLong', line: 2, lines: 121 },
    ]);
  });

  it('measures arrow functions and methods, and counts a nested function in its parent too', () => {
    const root = tree({
      'arrow-ok.ts': arrowFunction('fitsArrow', 120),
      'arrow-long.ts': arrowFunction('longArrow', 121),
      'method.ts': nestedMethod('longMethod', 121),
      'method-ok.ts': nestedMethod('fitsMethod', 116),
    });
    expect(findLongFunctions(root, listCheckedFiles(root))).toEqual([
      { file: 'method.ts', name: 'outer', line: 1, lines: 125 },
      { file: 'arrow-long.ts', name: 'longArrow', line: 1, lines: 121 },
      { file: 'method.ts', name: 'longMethod', line: 3, lines: 121 },
    ]);
  });

  it('skips test files, test support, drizzle/, node_modules and the generated ABIs', () => {
    const long = declaredFunction('long', 200);
    const root = tree({
      'svc/thing.test.ts': long,
      'test/support/db.ts': long,
      'drizzle/0001.ts': long,
      'node_modules/x/index.ts': long,
      'shared/chain/contracts/abis.ts': long,
      'svc/types.d.ts': long,
      'svc/thing.ts': declaredFunction('short', 3),
    });
    expect(listCheckedFiles(root)).toEqual([join(root, 'svc/thing.ts')]);
    expect(findLongFunctions(root, listCheckedFiles(root))).toEqual([]);
  });

  it('exits 1 naming the file, line and length, and 0 when everything fits', () => {
    const failing = tree({ 'svc/long.ts': declaredFunction('tooLong', 121) });
    let stderr = '';
    let status = 0;
    try {
      execFileSync(tsx, [script, failing], { encoding: 'utf8', stdio: 'pipe' });
    } catch (error) {
      const e = error as { status: number; stderr: string };
      status = e.status;
      stderr = e.stderr;
    }
    expect(status).toBe(1);
    expect(stderr).toContain('svc/long.ts:2 tooLong is 121 lines (max 120)');

    const passing = tree({ 'svc/ok.ts': declaredFunction('fits', 120) });
    expect(execFileSync(tsx, [script, passing], { encoding: 'utf8', stdio: 'pipe' })).toBe('');
  });
});
