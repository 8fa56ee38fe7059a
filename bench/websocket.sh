#!/usr/bin/env bash
# WebSockets through cookiegate, measured beside nginx:
#
# 1. echo latency of small messages (one socket, 5,000 messages one after the other), through
#    cookiegate and through nginx (`proxy_set_header Upgrade/Connection`, the same bearer from
#    the cookie), 3 rounds interleaved; medians of p50 and p99;
# 2. many idle sockets: cookiegate's RSS before and after opening N (10,000 by default) sockets
#    through it, each with its own cookie; RSS per socket.
#
#   bench/websocket.sh              (BENCH_WORK scratch folder, WS_IDLE=10000, BENCH_ROUNDS=3)
#
# The proxies run on CPU 0, the echo upstream and the clients on CPU 1; all on 127.0.0.1.
# Installs nginx from Debian if missing; needs node. Prints a Markdown report.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
set +m
cd "$(dirname "$0")/.."
WORK=${BENCH_WORK:-/tmp/cookiegate-ws-bench}
IDLE=${WS_IDLE:-10000}
ROUNDS=${BENCH_ROUNDS:-3}
export PATH="$PATH:/usr/sbin"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
cargo build --release --locked --quiet --bin cookiegate
# 10,000 sockets through a proxy are 20,000 descriptors: raise the hard limit too (as root).
ulimit -Hn 100000 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Where the hard limit cannot be raised (a sandbox), as many sockets as it allows: cookiegate
# holds two descriptors per socket.
fit=$((($(ulimit -n) - 200) / 2))
if [ "$IDLE" -gt "$fit" ]; then
  log "the descriptor limit ($(ulimit -n)) allows $fit sockets through one process, not $IDLE"
  IDLE=$fit
fi

rm -rf "$WORK" && mkdir -p "$WORK/nginx"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cat >"$WORK/cookiegate.toml" <<TOML
listen = "127.0.0.1:18401"
[server]
workers = 1
max_connections = 50000
[log]
level = "warn"
[websocket]
idle_timeout = "10m"
[[routes]]
prefix = "/ws"
upstream = "http://127.0.0.1:18402"
cookie = "auth_token"
websocket = true
TOML
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
events { worker_connections 50000; }
http {
    access_log off;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    server {
        listen 127.0.0.1:18403;
        location /ws {
            proxy_pass http://127.0.0.1:18402;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Authorization "Bearer \$cookie_auth_token";
            proxy_set_header Cookie "";
            proxy_read_timeout 10m;
        }
    }
}
CONF

setsid taskset -c 1 node bench/websocket.mjs echo 18402 &
PIDS+=($!)
setsid taskset -c 0 target/release/cookiegate --config "$WORK/cookiegate.toml" 2>"$WORK/cookiegate.log" &
CG_PID=$!
PIDS+=("$CG_PID")
setsid taskset -c 0 nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' &
PIDS+=($!)
sleep 1

latency() { taskset -c 1 node bench/websocket.mjs latency "$1" /ws 5000; }
results=()
for r in $(seq "$ROUNDS"); do
  for target in cookiegate:18401 nginx:18403; do
    name=${target%%:*}
    out=$(latency "127.0.0.1:${target##*:}")
    log "round $r: $name $out"
    results+=("$name $(sed 's/.*"p50_us":\([0-9]*\),"p99_us":\([0-9]*\).*/\1 \2/' <<<"$out")")
  done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
stat() { printf '%s\n' "${results[@]}" | awk -v t="$1" -v f="$2" '$1 == t { print $f }' | median; }

rss() { awk '/VmRSS/ { print $2 }' "/proc/$CG_PID/status"; }
before=$(rss)
log "opening $IDLE idle sockets through cookiegate (RSS before: $before KiB)"
coproc IDLE_CLIENT { taskset -c 1 node bench/websocket.mjs idle 127.0.0.1:18401 /ws "$IDLE"; }
read -r opened <&"${IDLE_CLIENT[0]}"
sleep 1
after=$(rss)
log "$opened; RSS after: $after KiB"
exec {IDLE_CLIENT[1]}>&-
wait "$IDLE_CLIENT_PID" 2>/dev/null || true

cat <<REPORT
Run of \`bench/websocket.sh\` on $(date -u '+%Y-%m-%d %H:%M') UTC, $ROUNDS round(s), medians.

| proxy | echo p50 (µs) | echo p99 (µs) |
|---|---|---|
| cookiegate | $(stat cookiegate 2) | $(stat cookiegate 3) |
| nginx | $(stat nginx 2) | $(stat nginx 3) |

Idle sockets through cookiegate: ${opened#open } open; RSS $((before / 1024)) MiB before, $((after / 1024)) MiB after: $(awk -v a="$after" -v b="$before" -v n="${opened#open }" 'BEGIN { printf "%.1f KiB per socket", (a - b) / n }').
REPORT
