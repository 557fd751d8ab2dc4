// Runs `hardhat node` in this process and exits when stdin closes: the parent (a test, a script)
// holds the other end of the pipe, so the node never outlives it, even when the parent is SIGKILLed.
// Usage: node node-process.cjs <hardhat node arguments…>
const path = require('node:path');

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

const cli = require.resolve('hardhat/internal/cli/cli.js');
process.argv = [
  process.argv[0],
  cli,
  '--config',
  path.join(__dirname, 'hardhat.config.cjs'),
  ...process.argv.slice(2),
];
require(cli);
