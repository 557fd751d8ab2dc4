/**
 * Preloaded (`node --import`) into every service `npm run dev` starts. Dev holds the other end of the
 * service's stdin, so when dev dies — even by SIGKILL, when it cannot stop anything — stdin ends and
 * the service stops as it would on SIGTERM, instead of living on with its port taken.
 */
process.stdin.on('end', () => process.kill(process.pid, 'SIGTERM'));
process.stdin.on('error', () => process.kill(process.pid, 'SIGTERM'));
process.stdin.resume();
