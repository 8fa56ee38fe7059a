#!/usr/bin/env bash
# The token handler's own costs, measured against the real test IdP (tests/idp):
#
# 1. CPU per request on a session route (`auth = "session"`: the encrypted cookie opened, the
#    session checked, its access token sent) against a plain cookie route (`auth = "required"`)
#    of the same cookiegate process: small GETs, wrk at 64 connections, 10 s per run, 3 rounds
#    interleaved. cookiegate runs single-threaded on CPU 0, wrk, the IdP and the upstream on CPU 1.
# 2. Single flight at scale: one session, its access token expired, N requests (1000 by
#    default) sent at once; the IdP counts the refresh grants (must be 1).
#
#   bench/session.sh                 (BENCH_WORK scratch folder, SESSION_BURST=1000)
#
# Installs nginx, wrk and curl from Debian if missing, and the test IdP's npm packages. Prints a
# Markdown report; everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
set +m
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_WORK:-/tmp/cookiegate-session-bench}
BURST=${SESSION_BURST:-1000}
ROUNDS=${BENCH_ROUNDS:-3}
TOKEN="bench.TOKEN-0123456789_abcdefghijklmnopqrstuvwxyz"
GW=http://127.0.0.1:18301
CLK_TCK=$(getconf CLK_TCK)
export PATH="$PATH:/usr/sbin"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=()
for tool in nginx wrk curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash tests/idp/install.sh
cargo build --release --locked --quiet --bin cookiegate
CG_BIN="$REPO/target/release/cookiegate"

rm -rf "$WORK" && mkdir -p "$WORK"/{upstream,www/files}
sed "s#@WORK@#$WORK#g" bench/targets/upstream-nginx.conf >"$WORK/upstream-nginx.conf"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# The upstream of bench/run.sh; reused when run.sh (which calls this script) has it running.
if ! curl -fsS -o /dev/null http://127.0.0.1:18080/echo 2>/dev/null; then
  setsid taskset -c 1 nginx -p "$WORK/upstream" -c "$WORK/upstream-nginx.conf" -e "$WORK/upstream/error.log" -g 'daemon off;' &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:18080/echo 2>/dev/null && break; sleep 0.05; done
fi

# start_stack TTL REFRESH_BEFORE WORKERS: the IdP (access tokens live TTL s) and cookiegate.
start_stack() {
  local ttl=$1 before=$2 workers=$3
  IDP_REDIRECT_URIS="$GW/auth/callback" IDP_ACCESS_TTL=$ttl IDP_CLIENT_SECRET=bench-secret \
    setsid taskset -c 1 node tests/idp/server.mjs >"$WORK/idp.out" 2>"$WORK/idp.log" &
  IDP_PID=$!
  PIDS+=("$IDP_PID")
  for _ in $(seq 100); do [ -s "$WORK/idp.out" ] && break; sleep 0.1; done
  ISSUER=$(sed -n 's/.*"issuer":"\([^"]*\)".*/\1/p' "$WORK/idp.out")
  cat >"$WORK/cookiegate.toml" <<TOML
listen = "127.0.0.1:18301"
[server]
workers = $workers
[log]
level = "warn"
[session]
cookie = "cg"
[oidc]
issuer = "$ISSUER"
client_id = "cookiegate"
redirect_uri = "$GW/auth/callback"
refresh_before = "$before"
[[routes]]
prefix = "/api/session"
upstream = "http://127.0.0.1:18080/echo"
auth = "session"
[[routes]]
prefix = "/api/plain"
upstream = "http://127.0.0.1:18080/echo"
cookie = "auth_token"
TOML
  COOKIEGATE_SESSION_KEYS=$(head -c 32 /dev/urandom | base64) COOKIEGATE_CLIENT_SECRET=bench-secret \
    setsid taskset -c 0 "$CG_BIN" --config "$WORK/cookiegate.toml" 2>"$WORK/cookiegate.log" &
  CG_PID=$!
  PIDS+=("$CG_PID")
  for _ in $(seq 100); do curl -fsS -o /dev/null "$GW/healthz" 2>/dev/null && break; sleep 0.05; done
}
stop_stack() { kill "$CG_PID" "$IDP_PID" 2>/dev/null || true; wait "$CG_PID" "$IDP_PID" 2>/dev/null || true; }
ticks() { # utime + stime of cookiegate, in clock ticks (fields 14 and 15 of /proc/PID/stat)
  local rest
  rest=$(cut -d')' -f2- "/proc/$CG_PID/stat")
  # shellcheck disable=SC2086
  set -- $rest
  echo $((${12} + ${13}))
}

# run ROUTE -> "req/s µs-per-request"
run() {
  local url="$GW/api/$1" t0 t1 out req rps
  t0=$(ticks)
  out=$(taskset -c 1 wrk -t1 -c64 -d10s -H "Cookie: auth_token=$TOKEN; $COOKIE" "$url")
  t1=$(ticks)
  req=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then log "non-2xx answers on $1:"; echo "$out" >&2; exit 1; fi
  awk -v r="$rps" -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.0f %.2f\n", r, d / hz * 1e6 / n }'
}

log "part 1: session route against plain cookie route, $ROUNDS rounds"
start_stack 3600 60s 1
COOKIE=$(node bench/session.mjs login "$GW" bench)
log "session cookie: ${#COOKIE} bytes"
taskset -c 1 wrk -t1 -c64 -d2s -H "Cookie: auth_token=$TOKEN; $COOKIE" "$GW/api/session" >/dev/null
taskset -c 1 wrk -t1 -c64 -d2s -H "Cookie: auth_token=$TOKEN; $COOKIE" "$GW/api/plain" >/dev/null
results=()
for r in $(seq "$ROUNDS"); do
  for route in plain session; do
    read -r rps us <<<"$(run $route)"
    log "round $r: $route $rps req/s, $us µs per request"
    results+=("$route $rps $us")
  done
done
stop_stack

log "part 2: $BURST concurrent requests of one session at its token's expiry"
start_stack 2 1s 0
COOKIE=$(node bench/session.mjs login "$GW" burst)
sleep 2.5
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
burst=$(taskset -c 1 node bench/session.mjs burst "$GW/api/session" "$COOKIE" "$BURST")
grants=$(curl -fsS "$ISSUER/test/stats?sub=burst" | sed -n 's/.*"refresh_grants":\([0-9]*\).*/\1/p')
stop_stack

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
p_rps=$(printf '%s\n' "${results[@]}" | awk '$1 == "plain" { print $2 }' | median)
s_rps=$(printf '%s\n' "${results[@]}" | awk '$1 == "session" { print $2 }' | median)
p_us=$(printf '%s\n' "${results[@]}" | awk '$1 == "plain" { print $3 }' | median)
s_us=$(printf '%s\n' "${results[@]}" | awk '$1 == "session" { print $3 }' | median)
cat <<REPORT
Run of \`bench/session.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC, $ROUNDS round(s), medians; session cookie ${#COOKIE} bytes.

| route | req/s (64 conns) | CPU per request (µs) |
|---|---|---|
| plain cookie (\`auth = "required"\`) | $p_rps | $p_us |
| session (\`auth = "session"\`) | $s_rps | $s_us |
| session / plain | $(awk -v a="$s_rps" -v b="$p_rps" 'BEGIN { printf "%.2f×", a / b }') | $(awk -v a="$s_us" -v b="$p_us" 'BEGIN { printf "%.2f×", a / b }') |

Single flight: $BURST requests of one session at once after its access token expired: $burst; refresh grants at the IdP: **$grants**.
REPORT
