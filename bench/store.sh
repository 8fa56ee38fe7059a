#!/usr/bin/env bash
# The shared store's costs (`[store]`, Valkey/Redis), against a real redis-server:
#
# 1. Small GETs on a rate-limited route, the limiter in the store (one script call per request)
#    against the same route with the in-process limiter, and nginx proxying the same upstream:
#    wrk at 64 connections, 10 s per run, 3 rounds interleaved. cookiegate single-threaded on
#    CPU 0; wrk, redis-server and the upstream on CPU 1. The limit is set far above the load,
#    so every request is counted and none refused.
# 2. Refresh single flight across three instances: one session, its access token expired, N
#    requests (1000 by default) sent at once, round-robin over three cookiegate processes sharing
#    the store; the test IdP counts the refresh grants (must be 1).
#
#   bench/store.sh                 (BENCH_WORK scratch folder, SESSION_BURST=1000, BENCH_ROUNDS=3)
#
# Installs redis-server, nginx, wrk and curl from Debian if missing, and the test IdP's npm
# packages. Prints a Markdown report; everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
set +m
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_WORK:-/tmp/cookiegate-store-bench}
BURST=${SESSION_BURST:-1000}
ROUNDS=${BENCH_ROUNDS:-3}
REDIS_PORT=18390
export PATH="$PATH:/usr/sbin"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=()
for tool in redis-server nginx wrk curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash tests/idp/install.sh
cargo build --release --locked --quiet --bin cookiegate
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$REPO/$target_dir" ;; esac
CG_BIN="$target_dir/release/cookiegate"

rm -rf "$WORK" && mkdir -p "$WORK"/{upstream,www/files,nginx}
sed "s#@WORK@#$WORK#g" bench/targets/upstream-nginx.conf >"$WORK/upstream-nginx.conf"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
started() { for _ in $(seq 400); do curl -fsS -o /dev/null "$1" 2>/dev/null && return; sleep 0.05; done; log "not up: $1"; exit 1; }

setsid taskset -c 1 nginx -p "$WORK/upstream" -c "$WORK/upstream-nginx.conf" -e "$WORK/upstream/error.log" -g 'daemon off;' &
PIDS+=($!)
started http://127.0.0.1:18080/echo
setsid taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

# nginx as the reference proxy: one worker, the same upstream, keep-alive both ways.
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:18080; keepalive 64; }
  server {
    listen 127.0.0.1:18312;
    location = /api {
      proxy_pass http://backend/echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
setsid taskset -c 0 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' &
PIDS+=($!)
started http://127.0.0.1:18312/api

# One cookiegate per limiter, both single-threaded on CPU 0 (never loaded at the same time).
for kind in local store; do
  port=$([ "$kind" = local ] && echo 18310 || echo 18311)
  {
    echo "listen = \"127.0.0.1:$port\""
    printf '[server]\nworkers = 1\n[log]\nlevel = "warn"\n'
    printf '[rate_limit]\nper_second = 4000000000\nburst = 4000000000\n'
    if [ "$kind" = store ]; then
      printf '[store]\nurl = "redis://127.0.0.1:%s/0"\nkey_prefix = "bench:"\n' "$REDIS_PORT"
    fi
    printf '[[routes]]\nprefix = "/api"\nupstream = "http://127.0.0.1:18080/echo"\nauth = "none"\n'
  } >"$WORK/$kind.toml"
  setsid taskset -c 0 "$CG_BIN" --config "$WORK/$kind.toml" 2>"$WORK/$kind.log" &
  PIDS+=($!)
  started "http://127.0.0.1:$port/api"
done

# run PORT -> req/s
run() {
  local out
  out=$(taskset -c 1 wrk -t1 -c64 -d10s "http://127.0.0.1:$1/api")
  if grep -q "Non-2xx" <<<"$out"; then log "non-2xx answers on :$1"; echo "$out" >&2; exit 1; fi
  awk '/Requests\/sec/ { printf "%.0f\n", $2 }' <<<"$out"
}

log "part 1: rate-limited small GETs, in-process limiter, store limiter, nginx; $ROUNDS rounds"
for port in 18310 18311 18312; do taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$port/api" >/dev/null; done
results=()
for r in $(seq "$ROUNDS"); do
  for target in local:18310 store:18311 nginx:18312; do
    rps=$(run "${target#*:}")
    log "round $r: ${target%%:*} $rps req/s"
    results+=("${target%%:*} $rps")
  done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
l_rps=$(printf '%s\n' "${results[@]}" | awk '$1 == "local" { print $2 }' | median)
s_rps=$(printf '%s\n' "${results[@]}" | awk '$1 == "store" { print $2 }' | median)
n_rps=$(printf '%s\n' "${results[@]}" | awk '$1 == "nginx" { print $2 }' | median)

log "part 2: $BURST concurrent requests of one session over three instances at its token's expiry"
GW=http://127.0.0.1:18321
IDP_REDIRECT_URIS="$GW/auth/callback" IDP_ACCESS_TTL=2 IDP_CLIENT_SECRET=bench-secret \
  setsid taskset -c 1 node tests/idp/server.mjs >"$WORK/idp.out" 2>"$WORK/idp.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/idp.out" ] && break; sleep 0.1; done
ISSUER=$(sed -n 's/.*"issuer":"\([^"]*\)".*/\1/p' "$WORK/idp.out")
KEYS=$(head -c 32 /dev/urandom | base64)
urls=()
for i in 1 2 3; do
  port=$((18320 + i))
  cat >"$WORK/instance$i.toml" <<TOML
listen = "127.0.0.1:$port"
[log]
level = "warn"
[store]
url = "redis://127.0.0.1:$REDIS_PORT/0"
key_prefix = "bench-fleet:"
timeout = "1s"
[session]
cookie = "cg"
[oidc]
issuer = "$ISSUER"
client_id = "cookiegate"
redirect_uri = "$GW/auth/callback"
refresh_before = "1s"
[[routes]]
prefix = "/api/session"
upstream = "http://127.0.0.1:18080/echo"
auth = "session"
TOML
  COOKIEGATE_SESSION_KEYS=$KEYS COOKIEGATE_CLIENT_SECRET=bench-secret \
    setsid taskset -c 0 "$CG_BIN" --config "$WORK/instance$i.toml" 2>"$WORK/instance$i.log" &
  PIDS+=($!)
  started "http://127.0.0.1:$port/healthz"
  urls+=("http://127.0.0.1:$port/api/session")
done
COOKIE=$(node bench/session.mjs login "$GW" burst)
sleep 2.5
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
burst=$(taskset -c 1 node bench/session.mjs burst "$(IFS=,; echo "${urls[*]}")" "$COOKIE" "$BURST")
grants=$(curl -fsS "$ISSUER/test/stats?sub=burst" | sed -n 's/.*"refresh_grants":\([0-9]*\).*/\1/p')
revoked=$(curl -fsS "$ISSUER/test/stats?sub=burst" | sed -n 's/.*"grants_revoked":\([0-9]*\).*/\1/p')

cat <<REPORT
Run of \`bench/store.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC, $ROUNDS round(s), medians; redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on CPU 1.

| small GET, rate-limited route | req/s (64 conns) | / in-process limiter | / nginx |
|---|---|---|---|
| cookiegate, in-process limiter | $l_rps | 1.00 | $(awk -v a="$l_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", a / b }') |
| cookiegate, limiter in the store | $s_rps | $(awk -v a="$s_rps" -v b="$l_rps" 'BEGIN { printf "%.2f", a / b }') | $(awk -v a="$s_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", a / b }') |
| nginx (no limit) | $n_rps | | 1.00 |

Single flight across three instances: $BURST requests of one session at once, round-robin over three cookiegate processes sharing the store, after its access token expired: $burst; refresh grants at the IdP: **$grants** (grants revoked: $revoked).
REPORT
