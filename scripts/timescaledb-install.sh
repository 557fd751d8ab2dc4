#!/usr/bin/env bash
# Builds and installs TimescaleDB 2.25.2 into the PostgreSQL that `pg_config` names, from the team's
# vendored source, when that server does not have it yet (no Debian package carries it). Dev, tests
# and CI only: production uses Timescale's own packages or image (docs/analytics.md).
#
#   npm run timescaledb:install            # source: ../shared/vendor beside the clone
#   npm run timescaledb:install -- FILE    # another copy of timescaledb-2.25.2.tar.gz
#   PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config npm run timescaledb:install   # another server
#
# Needs cmake, make, a C compiler, postgresql-server-dev-15 and libssl-dev, and write access to the
# server's lib and extension folders (root here). Safe to repeat and to run concurrently: a second run
# waits for the first (flock) and then finds the extension installed. The server still has to load it:
# `shared_preload_libraries = 'timescaledb'` (the tests' private clusters do).
set -euo pipefail

version=2.25.2
repo="$(cd "$(dirname "$0")/.." && pwd)"
tarball="${1:-$repo/../shared/vendor/timescaledb-$version.tar.gz}"
fail() {
  echo "timescaledb-install: $*" >&2
  exit 1
}

pg_config="${PG_CONFIG:-pg_config}"
command -v "$pg_config" >/dev/null 2>&1 || fail "$pg_config not found: install postgresql-server-dev-15"
libdir="$("$pg_config" --pkglibdir)"
extdir="$("$pg_config" --sharedir)/extension"
installed() { [ -e "$libdir/timescaledb-$version.so" ] && [ -e "$extdir/timescaledb--$version.sql" ]; }

exec 9>"${TMPDIR:-/tmp}/credana-timescaledb-install.lock"
flock 9
if installed; then
  echo "timescaledb-install: TimescaleDB $version is installed in $libdir ($("$pg_config" --version))"
  exit 0
fi

for tool in cmake make cc; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (Debian: cmake, make, gcc)"
done
[ -e "$("$pg_config" --includedir-server)/postgres.h" ] || fail "no server headers: install postgresql-server-dev-15"
[ -e /usr/include/openssl/ssl.h ] || fail "no OpenSSL headers: install libssl-dev"
[ -f "$tarball" ] || fail "no source at $tarball (expected the team folder ../shared/vendor beside the clone)"
[ -w "$libdir" ] && [ -w "$extdir" ] || fail "cannot write $libdir and $extdir: run as root"

work="$(mktemp -d "${TMPDIR:-/tmp}/credana-timescaledb-XXXXXX")"
trap 'rm -rf "$work"' EXIT
log="$work/build.log"
echo "timescaledb-install: building TimescaleDB $version for $("$pg_config" --version) (log: $log, ~1-3 min)"
tar xzf "$tarball" -C "$work"
src="$work/timescaledb-$version"
[ -x "$src/bootstrap" ] || fail "$tarball does not hold timescaledb-$version/bootstrap"
build() {
  cd "$src"
  # Telemetry off by default: tests and CI must not call Timescale's servers.
  BUILD_DIR="$src/build" ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
    -DLINTER=OFF -DCMAKE_BUILD_TYPE=Release -DSEND_TELEMETRY_DEFAULT=OFF \
    -DPG_CONFIG="$(command -v "$pg_config")"
  cd build
  make -j"$(nproc)"
  make install
}
if ! (build) >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  trap - EXIT
  fail "build failed; full log kept in $log"
fi
installed || fail "make install finished but $libdir/timescaledb-$version.so is missing"
echo "timescaledb-install: installed TimescaleDB $version into $libdir"
