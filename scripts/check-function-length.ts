// Lists every function, method and arrow function longer than FUNCTION_LINES_MAX lines in the project's
// non-test, non-generated TypeScript, and exits 1 if there is one (issue 13: split the god closures into
// named pieces). `npm run lint` runs it after Biome. Usage: `tsx scripts/check-function-length.ts [root]`.
//
// It parses with the TypeScript 7 compiler API (the `typescript` devDependency runs the native compiler as
// a child process and hands back its syntax trees). A function's length is the number of lines from its
// first token (the `function`/`async` keyword, its name or its parameter list — not a leading comment) to
// its last, both counted; a nested function counts inside its parent as well as on its own.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { getTokenPosOfNode, type Node, type SourceFile, SyntaxKind } from 'typescript/unstable/ast';
import { API } from 'typescript/unstable/sync';

/** The longest a function may be, in lines, outside generated code. */
export const FUNCTION_LINES_MAX = 120;

/** Folders never scanned: dependencies, build and run output, generated migrations, test support. */
const SKIPPED_FOLDERS = new Set(['node_modules', 'drizzle', 'coverage', 'test', 'artifacts']);

/** Generated files, relative to the root with `/` separators. */
const GENERATED_FILES = new Set(['shared/chain/contracts/abis.ts']);

const FUNCTION_KINDS = new Set<SyntaxKind>([
  SyntaxKind.FunctionDeclaration,
  SyntaxKind.FunctionExpression,
  SyntaxKind.ArrowFunction,
  SyntaxKind.MethodDeclaration,
  SyntaxKind.Constructor,
  SyntaxKind.GetAccessor,
  SyntaxKind.SetAccessor,
]);

export type LongFunction = {
  /** Path relative to the scanned root, `/`-separated. */
  file: string;
  /** A readable name: the declared name, or the variable/property the function is assigned to. */
  name: string;
  /** 1-based line of the function's first token. */
  line: number;
  lines: number;
};

/** The .ts files the limit applies to under `root`: not tests, not declarations, not generated. */
export function listCheckedFiles(root: string): string[] {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.name.startsWith('.')) continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!SKIPPED_FOLDERS.has(entry.name)) walk(path);
        continue;
      }
      if (!entry.name.endsWith('.ts') || entry.name.endsWith('.test.ts') || entry.name.endsWith('.d.ts')) {
        continue;
      }
      if (GENERATED_FILES.has(relative(root, path).split(sep).join('/'))) continue;
      files.push(path);
    }
  };
  walk(root);
  return files.sort();
}

function nameOf(node: Node): string {
  const own = (node as { name?: { text?: string } }).name?.text;
  if (own !== undefined) return own;
  if (node.kind === SyntaxKind.Constructor) return 'constructor';
  const parent = node.parent as (Node & { name?: { text?: string } }) | undefined;
  if (
    parent !== undefined &&
    (parent.kind === SyntaxKind.VariableDeclaration ||
      parent.kind === SyntaxKind.PropertyAssignment ||
      parent.kind === SyntaxKind.PropertyDeclaration) &&
    parent.name?.text !== undefined
  ) {
    return parent.name.text;
  }
  return '(anonymous)';
}

function longFunctionsIn(sourceFile: SourceFile, file: string, linesMax: number): LongFunction[] {
  const found: LongFunction[] = [];
  const visit = (node: Node): void => {
    if (FUNCTION_KINDS.has(node.kind)) {
      const first = sourceFile.getLineAndCharacterOfPosition(getTokenPosOfNode(node, sourceFile)).line;
      const last = sourceFile.getLineAndCharacterOfPosition(node.end).line;
      const lines = last - first + 1;
      if (lines > linesMax) found.push({ file, name: nameOf(node), line: first + 1, lines });
    }
    node.forEachChild(visit);
  };
  visit(sourceFile);
  return found;
}

/**
 * Every function in `files` longer than `linesMax` lines, longest first.
 * Example: `findLongFunctions('/repo', listCheckedFiles('/repo'))`.
 */
export function findLongFunctions(
  root: string,
  files: readonly string[],
  linesMax = FUNCTION_LINES_MAX,
): LongFunction[] {
  if (files.length === 0) return [];
  // The native compiler reads files through a project; a throwaway one that lists exactly these files,
  // resolves no imports and loads no libraries makes it parse them and nothing else.
  const dir = mkdtempSync(join(tmpdir(), 'check-function-length-'));
  const api = new API({ cwd: root });
  try {
    const config = join(dir, 'tsconfig.json');
    writeFileSync(
      config,
      JSON.stringify({
        compilerOptions: {
          noResolve: true,
          noLib: true,
          types: [],
          noEmit: true,
          allowImportingTsExtensions: true,
        },
        files,
      }),
    );
    const project = api.updateSnapshot({ openProject: config }).getProject(config);
    if (project === undefined) throw new Error(`the compiler opened no project for ${config}`);
    const found: LongFunction[] = [];
    for (const path of files) {
      const sourceFile = project.program.getSourceFile(path);
      if (sourceFile === undefined) throw new Error(`the compiler did not parse ${path}`);
      const file = relative(root, path).split(sep).join('/');
      found.push(...longFunctionsIn(sourceFile, file, linesMax));
    }
    return found.sort((a, b) => b.lines - a.lines || a.file.localeCompare(b.file) || a.line - b.line);
  } finally {
    api.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function main(): void {
  const root = resolve(process.argv[2] ?? '.');
  const long = findLongFunctions(root, listCheckedFiles(root));
  if (long.length === 0) return;
  for (const f of long) {
    process.stderr.write(`${f.file}:${f.line} ${f.name} is ${f.lines} lines (max ${FUNCTION_LINES_MAX})\n`);
  }
  process.stderr.write(
    `${long.length} function(s) over ${FUNCTION_LINES_MAX} lines: split them into named pieces.\n`,
  );
  process.exitCode = 1;
}

if (import.meta.url === `file://${process.argv[1]}`) main();
