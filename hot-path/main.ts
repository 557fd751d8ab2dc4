/** `npm run start:hot-path`: the authorization server as its own process. */
import { serve } from '@hono/node-server';
import { configFromProcess } from '../shared/config.ts';
import { createHotPath } from './server.ts';

const config = configFromProcess();
const hotPath = await createHotPath(config);
const server = serve(
  { fetch: hotPath.app.fetch, port: config.HOT_PATH_PORT, hostname: config.HOT_PATH_HOST },
  (info) => {
    hotPath.logger.info({ port: info.port }, 'hot path listening');
    // A line other processes (tests, the dev stack) wait for.
    process.stdout.write(`hot-path ready on http://${config.HOT_PATH_HOST}:${info.port}\n`);
  },
);

function shutdown(): void {
  server.close(() => {
    hotPath.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
