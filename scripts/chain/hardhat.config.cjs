// Hardhat 2 network for the local chain (scripts/chain-node.ts and the tests start it as a child
// process). Contracts are compiled by scripts/chain-compile.ts, not by Hardhat: `sources` points at an
// empty folder so `hardhat node` never compiles or downloads a compiler.
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');

module.exports = {
  paths: {
    root,
    sources: path.join(root, '.dev', 'hardhat', 'no-sources'),
    cache: path.join(root, '.dev', 'hardhat', 'cache'),
    artifacts: path.join(root, '.dev', 'hardhat', 'artifacts'),
  },
  networks: {
    hardhat: {
      chainId: 31337,
      // The contracts target Cancun; a later default fork would also cap gas per transaction.
      hardfork: 'cancun',
      blockGasLimit: 100_000_000,
      allowBlocksWithSameTimestamp: true,
      // The node would print every call; that costs time per request and nobody reads it.
      loggingEnabled: false,
      mining: { auto: true, interval: 0 },
    },
  },
};
