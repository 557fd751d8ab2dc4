/**
 * pgaudit as the private clusters of the tests run it, and as docs/operations.md asks production to
 * run the financial database: session audit of role changes, DDL and every write, one line per
 * relation, without bind parameters (they can carry personal data).
 */
export const PGAUDIT_SETTINGS: Readonly<Record<string, string>> = {
  shared_preload_libraries: 'pgaudit',
  'pgaudit.log': 'role,ddl,write',
  'pgaudit.log_relation': 'on',
  'pgaudit.log_parameter': 'off',
  'pgaudit.log_catalog': 'off',
  // Who and where: pgaudit's lines carry the statement, the log prefix carries the role and database.
  log_line_prefix: '%m [%p] %q%u@%d ',
};
