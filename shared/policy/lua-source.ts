/**
 * Small helpers for writing Lua source from TypeScript constants (the policy's field names and stored
 * answer format), so a name is spelled once and the scripts cannot drift from the code that reads what
 * they write.
 */

/** A Lua single-quoted string literal of `text` (field names and formats: no quote or backslash). */
export function luaString(text: string): string {
  if (/['\\\n]/.test(text)) throw new Error(`not a plain Lua string: ${text}`);
  return `'${text}'`;
}

const LITERAL = /^'[^'\\]*'$/;
/** A name, or an indexed name (`ARGV[4]`): needs no parentheses inside a concatenation. */
const SIMPLE = /^[A-Za-z_][A-Za-z0-9_]*(\[\d+\])?$/;

/**
 * A Lua expression concatenating `parts` (Lua expressions) with the plain text `separator` between
 * them; adjacent literals are folded into one, so the source reads as if written by hand, and any
 * other expression than a literal or a name is parenthesised.
 * @example luaConcat(["'0'", "'0'", 'reason', 'id'], '|') // "'0|0|' .. reason .. '|' .. id"
 */
export function luaConcat(parts: readonly string[], separator: string): string {
  const pieces: string[] = [];
  parts.forEach((part, i) => {
    if (i > 0) pieces.push(luaString(separator));
    // `..` binds tighter than `and`/`or`: anything but a literal or a name is parenthesised.
    pieces.push(LITERAL.test(part) || SIMPLE.test(part) ? part : `(${part})`);
  });
  const folded: string[] = [];
  for (const piece of pieces) {
    const last = folded[folded.length - 1];
    if (last !== undefined && LITERAL.test(last) && LITERAL.test(piece)) {
      folded[folded.length - 1] = `${last.slice(0, -1)}${piece.slice(1)}`;
    } else {
      folded.push(piece);
    }
  }
  return folded.join(' .. ');
}
