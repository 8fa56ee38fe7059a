#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind (user space only; this VM has
# no hardware counters, and instruction counts repeat where timings do not). The figures in
# BENCHMARKS.md "What profiling found" come from this script.
#
#   bench/callgrind.sh            # cookiegate (release build of this checkout) and nginx
#   CG_BIN=path bench/callgrind.sh  # another cookiegate binary, e.g. an older build
#   CG_METRICS=1 bench/callgrind.sh # also the same build with `[metrics]` on (row cookiegate+metrics)
#   CG_NGINX=0 bench/callgrind.sh   # skip nginx (when only cookiegate's figures are wanted)
#
# Two measurements per proxy, both against the bench's upstream nginx (bench/targets):
# - sequential: one curl keep-alive connection sends N small GETs with a cookie, an `Accept` and
#   a `User-Agent`; a run of 200 is subtracted so start-up does not count;
# - load: `wrk -c64`, one run of 2 s and one of 2 s + 8 s, each in a fresh process; the
#   difference of their counts divided by the difference of their requests. Under load a single
#   wake-up serves many requests, so this is the figure that matches req/s.
# Installs valgrind, nginx, wrk and curl from Debian if missing. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${CG_REQUESTS:-2000}
WORK=${BENCH_WORK:-/tmp/cookiegate-callgrind}
TOKEN="bench.TOKEN-0123456789_abcdefghijklmnopqrstuvwxyz"
export PATH="$PATH:/usr/sbin"

need=()
for tool in valgrind nginx wrk curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${CG_BIN:-}" ]; then
  cargo build --release --locked --quiet --bin cookiegate
  CG_BIN="$REPO/target/release/cookiegate"
fi

rm -rf "$WORK" && mkdir -p "$WORK"/{upstream,nginx,www/files}
# nginx workers run as `nobody` and write their own callgrind files here.
chmod 1777 "$WORK"
for f in upstream-nginx.conf nginx.conf cookiegate.toml; do
  sed "s#@WORK@#$WORK#g" "bench/targets/$f" >"$WORK/$f"
done
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
setsid nginx -p "$WORK/upstream" -c "$WORK/upstream-nginx.conf" -e "$WORK/upstream/error.log" -g 'daemon off;' &
PIDS+=($!)
for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:18080/echo 2>/dev/null && break; sleep 0.05; done

# start NAME PORT CMD...: the proxy under callgrind; waits until it answers.
start() {
  local name=$1 port=$2
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.%p.out" "$@" >"$WORK/$name.log" 2>&1 &
  VG=$!
  for _ in $(seq 200); do
    curl -fsS -o /dev/null -b "auth_token=$TOKEN" "http://127.0.0.1:$port/api/proxy/echo" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start; see $WORK/$name.log" >&2
  exit 1
}
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }
stop() {
  kill -TERM "$VG"
  wait "$VG" 2>/dev/null || true
  # nginx's worker (forked, so also under valgrind) exits after its master.
  while pgrep -f "callgrind-out-file=$WORK" >/dev/null; do sleep 0.1; done
}

sequential() { # NAME PORT REQUESTS CMD... -> instructions of the whole run
  local name=$1 port=$2 n=$3
  shift 3
  start "$name-$n" "$port" "$@"
  curl -s -o /dev/null -b "auth_token=$TOKEN" -H 'Accept: application/json' \
    -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64)' "http://127.0.0.1:$port/api/proxy/echo?[1-$n]"
  stop
  local sum=0 f
  for f in "$WORK/$name-$n".*.out*; do sum=$((sum + $(total "$f"))); done
  echo "$sum"
}

# wrk_run NAME PORT SECONDS... CMD...: one process under load for each duration in turn;
# prints "REQUESTS INSTRUCTIONS" of the whole process.
wrk_run() {
  local name=$1 port=$2 secs=$3
  shift 3
  start "$name-load-$secs" "$port" "$@"
  local url="http://127.0.0.1:$port/api/proxy/echo" requests=0 d
  for d in 2 $([ "$secs" -gt 2 ] && echo $((secs - 2))); do
    requests=$((requests + $(wrk -t1 -c64 -d"${d}s" -H "Cookie: auth_token=$TOKEN" "$url" |
      awk '/requests in/ { print $1 }')))
  done
  stop
  local sum=0 f
  for f in "$WORK/$name-load-$secs".*.out*; do sum=$((sum + $(total "$f"))); done
  echo "$requests $sum"
}

load() { # NAME PORT CMD... -> instructions per request under 64 connections
  local name=$1 port=$2 short long
  shift 2
  short=$(wrk_run "$name" "$port" 2 "$@")
  long=$(wrk_run "$name" "$port" 10 "$@")
  # shellcheck disable=SC2086
  set -- $short $long
  echo $((($4 - $2) / ($3 - $1)))
}

report() { # NAME PORT CMD...
  local name=$1 port=$2 small big
  shift 2
  small=$(sequential "$name" "$port" 200 "$@")
  big=$(sequential "$name" "$port" $((N + 200)) "$@")
  echo "| $name | $(((big - small) / N)) | $(load "$name" "$port" "$@") |"
}

echo "| proxy | instructions/request, 1 connection | instructions/request, 64 connections |"
echo "|---|---|---|"
report cookiegate 18201 "$CG_BIN" --config "$WORK/cookiegate.toml"
if [ "${CG_METRICS:-0}" = 1 ]; then
  # The same config with a metrics listener: the cost of metrics per request.
  { cat "$WORK/cookiegate.toml"; printf '\n[metrics]\nlisten = "127.0.0.1:18208"\n'; } >"$WORK/metrics.toml"
  report cookiegate+metrics 18201 "$CG_BIN" --config "$WORK/metrics.toml"
fi
[ "${CG_NGINX:-1}" = 1 ] || exit 0
# nginx: master and worker (`--trace-children`); the worker does the proxying.
report nginx 18202 --trace-children=yes nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" \
  -e "$WORK/nginx/error.log" -g 'daemon off;'
