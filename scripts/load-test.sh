#!/usr/bin/env bash
# Bounded load test for cookiegate: loopback only, stops by itself.
#
#   scripts/load-test.sh                 # about 60 s of load, ~90 s in all once built
#   LOAD_SECS=20 scripts/load-test.sh    # shorter
#   scripts/load-test.sh --workers 16    # extra options go to examples/load
#
# Builds the release binary and the load generator (examples/load/), which starts a small
# upstream and cookiegate on 127.0.0.1 ports chosen by the kernel, drives the mix of valid,
# missing-cookie, hostile and slow requests, floods connections past max_connections, lets
# everything settle, and checks the gateway process: valid requests all 2xx, nothing hostile
# reached the upstream, still serving, descriptors back to baseline, RSS back near its start,
# no ERROR in its log, clean exit on SIGTERM. Prints a summary table; exits 1 when a check
# fails, 2 when the test itself could not run. Config and log land in target/load-test/.
# The gateway runs with glibc's malloc thresholds fixed so RSS tracks live memory; pass
# `--malloc default` to measure glibc's defaults (RSS then keeps the allocator's caches).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${LOAD_SECS:-60}"
dir="target/load-test"

echo "== build (release)"
cargo build --release --locked --bin cookiegate --example load

mkdir -p "$dir"
echo "== load: ${secs}s of mixed traffic through target/release/cookiegate"
# A hard stop well past the run's own bound, in case anything hangs.
exec timeout --kill-after=10 "$((secs + 120))" \
  target/release/examples/load --gateway target/release/cookiegate --secs "$secs" --dir "$dir" "$@"
