# syntax=docker/dockerfile:1
# One image for every Credana service: the container's command is the service's npm start command,
# e.g. `npm run start:hot-path` (the default), `npm run start:ledger-writer`, `npm run db:migrate`.
# deploy/compose.yaml and deploy/k8s/ set it per service; deploy/deploy.test.ts checks every command
# they run is a script of package.json. Build: docker build -t credana-backend .
#
# Node 24 is the version package.json pins (engines and the `node` devDependency).
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# ── deps: the production install (npm ci --omit=dev), built where compilers exist ─────────────────
FROM ${NODE_IMAGE} AS deps
# pkcs11js is a native addon (node-gyp): python3, make and g++ build it here, never in the runtime image.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The lockfile decides every version; patches/ must be present before the install, because the
# postinstall script (patch-package) applies patches/postgres+3.4.9.patch, a run-time fix of the
# database driver (shared/db/driver-patch.test.ts).
COPY package.json package-lock.json ./
COPY patches ./patches
RUN npm ci --omit=dev --no-audit --no-fund \
  && npm cache clean --force

# ── runtime: no compilers, no dev tools, not root ─────────────────────────────────────────────────
FROM ${NODE_IMAGE} AS runtime
# Unset NODE_ENV means production already (shared/config.ts); it is written here to be plain.
ENV NODE_ENV=production
# npm runs a script through `sh -c`; Debian's sh (dash) does not pass SIGTERM on to the command, so
# `docker stop` / a pod's termination would stop npm and orphan the service, which is then SIGKILLed
# without its graceful shutdown. bash execs a single command, so npm's own signal forwarding reaches
# tsx, which relays it to the service (deploy/deploy.test.ts proves both halves).
ENV npm_config_script_shell=/bin/bash
# npm's cache and logs under /tmp: the root filesystem is read-only in deploy/k8s (an emptyDir at /tmp).
ENV npm_config_cache=/tmp/.npm npm_config_update_notifier=false npm_config_fund=false
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY patches ./patches
# What the services import at run time, and the migrations `npm run db:migrate` applies. Tests,
# docs, benchmarks and local tooling stay out (.dockerignore).
COPY shared ./shared
COPY hot-path ./hot-path
COPY ledger-writer ./ledger-writer
COPY indexer ./indexer
COPY settlement ./settlement
COPY liquidator ./liquidator
COPY withdrawals ./withdrawals
COPY anchorer ./anchorer
COPY reconciler ./reconciler
COPY supabase ./supabase
COPY scripts ./scripts
COPY drizzle ./drizzle
# The image's `node` user (uid 1000) owns nothing in /app: the code is read-only to the service.
USER node
# Public ports (HOT_PATH_PORT, LEDGER_WRITER_PORT, WITHDRAWALS_PORT) and internal listeners
# (HOT_PATH_METRICS_PORT, SUPABASE_SYNC_METRICS_PORT, SETTLEMENT_, LIQUIDATOR_ and WITHDRAWALS_METRICS_PORT,
# the indexer's --metrics-port) at the values deploy/ sets. The HSM vendor's PKCS#11 library is not in
# the image: deploy/ mounts it read-only at /opt/pkcs11.
EXPOSE 8787 8788 8790 9464 9466 9467 9468 9469 9470
CMD ["npm", "run", "start:hot-path"]
