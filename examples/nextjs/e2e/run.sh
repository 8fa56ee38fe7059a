#!/usr/bin/env bash
# End-to-end test of examples/nextjs in Debian's Chromium, both deployment shapes.
#
# Installs what it needs (Debian's chromium, npm packages), builds cookiegate, the example backend
# and the Next.js app, starts them on free loopback ports, runs e2e.test.mjs with node's test
# runner, and always stops what it started. Safe to run again: every run starts from scratch in
# e2e/.run/. Its output ends with node's pass/fail summary; the exit status is the test's.
# It writes nothing tracked: the page's screenshot lands in e2e/.run/screenshot.png (copy it
# over examples/nextjs/screenshot.png to refresh the README's picture).
#
#   examples/nextjs/e2e/run.sh
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true

started_at=$(date +%s)
e2e=$(cd "$(dirname "$0")" && pwd)
app=$(dirname "$e2e")
root=$(cd "$app/../.." && pwd)
run="$e2e/.run"
export NEXT_TELEMETRY_DISABLED=1 CARGO_TERM_COLOR=never

step() { echo "== $* ($(($(date +%s) - started_at))s)"; }

step "chromium"
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null

step "npm ci (app, e2e)"
(cd "$app" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error)

step "cargo build --release (cookiegate, then nextjs-backend)"
# Two cargo runs, not one: built together, the two packages would share their crates with the
# union of both packages' features, and target/release/cookiegate would be another (larger)
# binary than the one `cargo build --release` makes, rebuilt at every switch between the two.
(cd "$root" && cargo build --release --locked --quiet -p cookiegate --bin cookiegate)
(cd "$root" && cargo build --release --locked --quiet -p nextjs-backend --bin nextjs-backend)
# Where cargo put them: $CARGO_TARGET_DIR when set (relative to the root, as cargo reads it).
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
cookiegate="$target_dir/release/cookiegate"
backend="$target_dir/release/nextjs-backend"

rm -rf "$run"
mkdir -p "$run"

# Five free loopback ports, held open together so they differ, then released for the servers.
read -r backend_port next_port front_port behind_port plain_port < <(node -e '
  const net = require("node:net");
  (async () => {
    const servers = [];
    for (let i = 0; i < 5; i++) {
      const s = net.createServer();
      await new Promise((ok) => s.listen(0, "127.0.0.1", ok));
      servers.push(s);
    }
    console.log(servers.map((s) => s.address().port).join(" "));
    servers.forEach((s) => s.close());
  })();')

# The browser reaches the app by name: Chromium maps *.example.com to 127.0.0.1 (see the test).
shape1_url="http://app.example.com:$front_port"   # cookiegate in front
shape2_url="http://app.example.com:$next_port"    # Next.js in front
shape2_plain_url="http://app.example.com:$plain_port"  # Next.js in front, its compression off

step "next build (rewrites to cookiegate on :$behind_port)"
(cd "$app" && COOKIEGATE_URL="http://127.0.0.1:$behind_port" \
  node node_modules/next/dist/bin/next build >"$run/next-build.log" 2>&1) || {
  cat "$run/next-build.log"
  exit 1
}

# The committed configs, with this run's ports (and, for shape 2, the app's public origin).
sed -e "s#127.0.0.1:8000#127.0.0.1:$backend_port#g" -e "s#127.0.0.1:3000#127.0.0.1:$next_port#g" \
  "$app/cookiegate.toml" >"$run/cookiegate.toml"
sed -e "s#127.0.0.1:8000#127.0.0.1:$backend_port#g" -e "s#http://localhost:3000#$shape2_url#g" \
  -e "s#^allowed_origins = \[\(.*\)\]#allowed_origins = [\1, \"$shape2_plain_url\"]#" \
  "$app/cookiegate.behind-next.toml" >"$run/cookiegate.behind-next.toml"
grep -q "$shape2_plain_url" "$run/cookiegate.behind-next.toml"
"$cookiegate" check --config "$run/cookiegate.toml" >/dev/null
"$cookiegate" check --config "$run/cookiegate.behind-next.toml" >/dev/null

pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

step "start backend :$backend_port, next :$next_port and :$plain_port (NEXT_COMPRESS=0), cookiegate :$front_port (front) and :$behind_port (behind next)"
"$backend" --listen "127.0.0.1:$backend_port" --auth-log "$run/auth.log" >"$run/backend.log" 2>&1 &
pids+=($!)
(cd "$app" && exec env BACKEND_URL="http://127.0.0.1:$backend_port" \
  COOKIEGATE_URL="http://127.0.0.1:$behind_port" \
  node node_modules/next/dist/bin/next start -H 127.0.0.1 -p "$next_port") >"$run/next.log" 2>&1 &
pids+=($!)
(cd "$app" && exec env BACKEND_URL="http://127.0.0.1:$backend_port" NEXT_COMPRESS=0 \
  node node_modules/next/dist/bin/next start -H 127.0.0.1 -p "$plain_port") >"$run/next-nocompress.log" 2>&1 &
pids+=($!)
"$cookiegate" --config "$run/cookiegate.toml" --listen "127.0.0.1:$front_port" >"$run/cookiegate-front.log" 2>&1 &
pids+=($!)
"$cookiegate" --config "$run/cookiegate.behind-next.toml" --listen "127.0.0.1:$behind_port" \
  >"$run/cookiegate-behind.log" 2>&1 &
pids+=($!)

node "$e2e/wait-for.mjs" 60 \
  "http://127.0.0.1:$backend_port/healthz" \
  "http://127.0.0.1:$front_port/healthz" \
  "http://127.0.0.1:$behind_port/healthz" \
  "http://127.0.0.1:$next_port/" \
  "http://127.0.0.1:$plain_port/" \
  "http://127.0.0.1:$front_port/"

step "node --test"
set +e
(cd "$e2e" && BACKEND_URL="http://127.0.0.1:$backend_port" SHAPE1_URL="$shape1_url" SHAPE2_URL="$shape2_url" \
  SHAPE2_NOCOMPRESS_URL="$shape2_plain_url" \
  AUTH_LOG="$run/auth.log" RESULTS="$run/results.json" APP_DIR="$app" SCREENSHOT="$run/screenshot.png" \
  E2E_STARTED_AT="$started_at" \
  node --test --test-reporter=spec --test-concurrency=1 e2e.test.mjs)
status=$?
set -e
stop_all
if [ "$status" -ne 0 ]; then
  for log in backend next next-nocompress cookiegate-front cookiegate-behind; do
    echo "---- $run/$log.log (last 30 lines)" >&2
    tail -n 30 "$run/$log.log" >&2 || true
  done
fi
exit "$status"
