#!/usr/bin/env bash
# Side-by-side benchmark: cookiegate against nginx, haproxy, caddy and the seed's Next.js route
# handler, all doing the same job (httpOnly cookie in, `Authorization: Bearer` out, streaming)
# in front of one upstream. See BENCHMARKS.md for the latest figures and how to read them.
#
#   bench/run.sh                    full run (3 interleaved rounds, about 8 minutes on 2 CPUs)
#   BENCH_QUICK=1 bench/run.sh      smoke run (1 round, short loads, a few minutes)
#
# Settings (environment): BENCH_ROUNDS (default 3), BENCH_TARGETS (default "direct cookiegate
# nginx haproxy caddy nextjs"), BENCH_WORK (scratch folder, default /tmp/cookiegate-bench),
# BENCH_OUT (where the Markdown report is copied, default $BENCH_WORK/report.md),
# BENCH_BASELINE_BIN (another cookiegate binary, e.g. a build of main before a change: measured
# as the target `baseline`, interleaved with the others, for a before/after ratio in one run),
# BENCH_METRICS (1: also measure the target `metrics`, this build with `[metrics]` on, interleaved
# with `cookiegate`, for the cost of metrics as a ratio in one run:
# `BENCH_METRICS=1 BENCH_TARGETS="cookiegate nginx" bench/run.sh`),
# BENCH_SESSION (1 by default: also run bench/session.sh, the token handler's costs),
# BENCH_WEBSOCKET (1 by default: also run bench/websocket.sh, sockets beside nginx).
#
# Layout: each proxy runs pinned to CPU 0 (`taskset -c 0`), with one worker/thread where that is
# configurable; wrk, curl, the SSE client and the upstream run on CPU 1. Everything listens on
# 127.0.0.1 only, every load is bounded in time, and every server started here is stopped on exit.
# Installs what it needs (Debian: nginx wrk haproxy caddy; npm: the Next.js app) when missing.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
# No job control: a background child then stays in our process group, so `setsid` below runs
# the server in a new session without forking, and `$!` is the server's own pid.
set +m

REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH="$REPO/bench"
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/cookiegate-bench}
QUICK=${BENCH_QUICK:-0}
TARGETS=${BENCH_TARGETS:-"direct cookiegate nginx haproxy caddy nextjs"}
BASELINE_BIN=${BENCH_BASELINE_BIN:-}
if [ -n "$BASELINE_BIN" ] && [[ " $TARGETS " != *" baseline "* ]]; then
  TARGETS="$TARGETS baseline"
fi
if [ "${BENCH_METRICS:-0}" = 1 ] && [[ " $TARGETS " != *" metrics "* ]]; then
  TARGETS="$TARGETS metrics"
fi
TOKEN="bench.TOKEN-0123456789_abcdefghijklmnopqrstuvwxyz"
CLK_TCK=$(getconf CLK_TCK)

if [ "$QUICK" = 1 ]; then
  ROUNDS=${BENCH_ROUNDS:-1}
  WARM=1 D64=3 D1=2 SSE_N=100 SSE_EVERY=5 GROWTH=0
else
  ROUNDS=${BENCH_ROUNDS:-3}
  WARM=2 D64=10 D1=5 SSE_N=400 SSE_EVERY=5 GROWTH=1
fi
CONNS=64
DL_BYTES=$((100 * 1024 * 1024))
UL_BYTES=$((50 * 1024 * 1024))
BIG_BYTES=$((1024 * 1024 * 1024))

declare -A PORT=([direct]=18080 [cookiegate]=18201 [nginx]=18202 [haproxy]=18203 [caddy]=18204 [nextjs]=18205 [baseline]=18206 [metrics]=18207)
HELPER_ADDR=127.0.0.1:18081

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes: each server is started in its own session (setsid), so its whole process tree can
# be measured (/proc) and stopped (its process group) by id.
STARTED=()
start_server() { # name cpu cmd... ; sets SERVER_PID
  local name=$1 cpu=$2
  shift 2
  setsid taskset -c "$cpu" "$@" >"$WORK/logs/$name.log" 2>&1 &
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
}

stop_server() { # pid
  local pid=$1 killer
  kill -TERM -- "-$pid" 2>/dev/null || true
  (sleep 5 && kill -KILL -- "-$pid" 2>/dev/null) &
  killer=$!
  wait "$pid" 2>/dev/null || true
  kill "$killer" 2>/dev/null || true
  wait "$killer" 2>/dev/null || true
  kill -KILL -- "-$pid" 2>/dev/null || true
  local kept=()
  for p in "${STARTED[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STARTED=("${kept[@]}")
}

cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do stop_server "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

session_pids() { ps -o pid= -s "$1" 2>/dev/null | tr -d ' '; }

cpu_ticks() { # sid -> utime+stime of every process in the session
  local total=0 p line rest
  for p in $(session_pids "$1"); do
    read -r line <"/proc/$p/stat" 2>/dev/null || continue
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

mem_kib() { # sid field(VmRSS|VmHWM) -> sum over the session, KiB
  local total=0 p v
  for p in $(session_pids "$1"); do
    v=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

reset_peak() { # sid: restart VmHWM from the current RSS (Linux >= 4.0)
  local p
  for p in $(session_pids "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}

# ---------------------------------------------------------------------------------------------
install_tools() {
  local missing=() pkg cmd
  for pkg in nginx wrk haproxy caddy curl; do
    cmd=$pkg
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
    local available=()
    for pkg in "${missing[@]}"; do
      if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        available+=("$pkg")
      else
        apt-get update -qq || true
        if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
          available+=("$pkg")
        else
          log "package $pkg is not in this machine's Debian archive: skipping what needs it"
        fi
      fi
    done
    if [ ${#available[@]} -gt 0 ]; then
      # Debian starts a freshly installed service unless policy-rc.d says no; we run our own.
      local policy=/usr/sbin/policy-rc.d own_policy=0
      if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
      fi
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${available[@]}" >/dev/null
      [ "$own_policy" = 0 ] || rm -f "$policy"
    fi
  fi
  export PATH="$PATH:/usr/sbin"
  command -v wrk >/dev/null || die "wrk is needed"
  command -v nginx >/dev/null || die "nginx is needed (it is the upstream)"
  local keep=()
  for t in $TARGETS; do
    case $t in
      haproxy | caddy) command -v "$t" >/dev/null && keep+=("$t") || log "no $t: target skipped" ;;
      nextjs) command -v node >/dev/null && command -v npm >/dev/null && keep+=("$t") || log "no node/npm: target nextjs skipped" ;;
      *) keep+=("$t") ;;
    esac
  done
  TARGETS="${keep[*]}"
}

build() {
  log "building cookiegate (release) and the bench helper"
  (cd "$REPO" && cargo build --release --locked --quiet --bin cookiegate)
  # Built on its own: the example pulls dev-dependency features (tokio's test-util) that must
  # not end up in the measured binary.
  (cd "$REPO" && cargo build --release --locked --quiet --example bench-upstream)
  CG_BIN="$REPO/target/release/cookiegate"
  HELPER="$REPO/target/release/examples/bench-upstream"
  if [[ " $TARGETS " == *" nextjs "* ]]; then
    local app="$BENCH/nextjs" stamp
    stamp=$(cat "$app/package-lock.json" "$app/app/api/proxy/[...path]/route.ts" "$app/next.config.ts" | sha256sum | cut -c1-16)
    if [ ! -f "$app/node_modules/.bench-stamp" ] || [ "$(cat "$app/node_modules/.bench-stamp")" != "$stamp" ] || [ ! -f "$app/.next/BUILD_ID" ]; then
      log "installing and building the Next.js handler (npm ci, next build)"
      (cd "$app" && NEXT_TELEMETRY_DISABLED=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null &&
        NEXT_TELEMETRY_DISABLED=1 node_modules/.bin/next build >"$WORK/logs/next-build.log" 2>&1) ||
        die "Next.js build failed; see $WORK/logs/next-build.log"
      echo "$stamp" >"$app/node_modules/.bench-stamp"
    fi
  fi
}

prepare() {
  if [ -e "$WORK" ] && [ ! -e "$WORK/.cookiegate-bench" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
    die "$WORK exists and was not made by this script; set BENCH_WORK to a new folder"
  fi
  rm -rf "$WORK"
  mkdir -p "$WORK"/{logs,upstream,nginx,caddy,www/files}
  touch "$WORK/.cookiegate-bench"
  truncate -s "$DL_BYTES" "$WORK/www/files/big.bin"
  truncate -s "$BIG_BYTES" "$WORK/www/files/huge.bin"
  truncate -s "$UL_BYTES" "$WORK/upload.bin"
  local f
  for f in upstream-nginx.conf nginx.conf haproxy.cfg Caddyfile cookiegate.toml; do
    sed "s#@WORK@#$WORK#g" "$BENCH/targets/$f" >"$WORK/$f"
  done
  # The baseline build: the same config on its own port.
  sed "s#127.0.0.1:${PORT[cookiegate]}#127.0.0.1:${PORT[baseline]}#" "$WORK/cookiegate.toml" >"$WORK/baseline.toml"
  # Metrics on: the same config on its own port, plus a metrics listener.
  sed "s#127.0.0.1:${PORT[cookiegate]}#127.0.0.1:${PORT[metrics]}#" "$WORK/cookiegate.toml" >"$WORK/metrics.toml"
  printf '\n[metrics]\nlisten = "127.0.0.1:18208"\n' >>"$WORK/metrics.toml"
  : >"$WORK/results.tsv"
}

start_upstream() {
  log "starting the upstream (nginx + bench-upstream on CPU 1)"
  start_server helper 1 "$HELPER" serve "$HELPER_ADDR"
  HELPER_PID=$SERVER_PID
  start_server upstream 1 nginx -p "$WORK/upstream" -c "$WORK/upstream-nginx.conf" -e "$WORK/upstream/error.log" -g 'daemon off;'
  UPSTREAM_PID=$SERVER_PID
  local i
  for i in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:18080/echo" 2>/dev/null &&
      curl -fsS -o /dev/null "http://$HELPER_ADDR/upload" -d x 2>/dev/null && return 0
    sleep 0.05
  done
  die "the upstream did not start; see $WORK/logs/"
}

start_target() { # target -> SERVER_PID (empty for direct), READY_MS
  local t=$1 since
  SERVER_PID=""
  READY_MS=""
  # No fork before the start: bash's own clock, in ns.
  since=${EPOCHREALTIME/./}000
  case $t in
    direct) return 0 ;;
    cookiegate) start_server "$t" 0 "$CG_BIN" --config "$WORK/cookiegate.toml" ;;
    baseline) start_server "$t" 0 "$BASELINE_BIN" --config "$WORK/baseline.toml" ;;
    metrics) start_server "$t" 0 "$CG_BIN" --config "$WORK/metrics.toml" ;;
    nginx) start_server "$t" 0 nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' ;;
    haproxy) start_server "$t" 0 haproxy -f "$WORK/haproxy.cfg" ;;
    caddy) start_server "$t" 0 env GOMAXPROCS=1 XDG_DATA_HOME="$WORK/caddy" XDG_CONFIG_HOME="$WORK/caddy" \
      caddy run --config "$WORK/Caddyfile" --adapter caddyfile ;;
    nextjs) start_server "$t" 0 env --chdir="$BENCH/nextjs" BACKEND_URL=http://127.0.0.1:18080 NODE_ENV=production \
      NEXT_TELEMETRY_DISABLED=1 node_modules/.bin/next start -p "${PORT[$t]}" -H 127.0.0.1 ;;
  esac
  READY_MS=$(taskset -c 1 "$HELPER" ready "127.0.0.1:${PORT[$t]}" /api/proxy/echo "$TOKEN" "$since") || return 1
}

url() { echo "http://127.0.0.1:${PORT[$1]}$([ "$1" = direct ] || echo /api/proxy)$2"; }

# What the upstream receives on the direct path, so direct is the limit of the same exchange.
auth_args() { # target -> curl/wrk header arguments
  if [ "$1" = direct ]; then
    printf '%s\n' -H "Authorization: Bearer $TOKEN" -H "Cookie: theme=dark; auth_token=$TOKEN"
  else
    printf '%s\n' -H "Cookie: theme=dark; auth_token=$TOKEN"
  fi
}

check_target() { # target: the upstream saw the bearer; 401 without the cookie
  local t=$1 body code
  mapfile -t hdr < <(auth_args "$t")
  body=$(curl -sS --max-time 10 "${hdr[@]}" "$(url "$t" /echo)") || return 1
  if [[ "$body" != *"\"auth\":\"Bearer $TOKEN\""* ]]; then
    log "$t: the upstream did not see the bearer: $body"
    return 1
  fi
  if [ "$t" != direct ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$(url "$t" /echo)")
    if [ "$code" != 401 ]; then
      log "$t: without the cookie: $code, not 401"
      return 1
    fi
  fi
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$WORK/results.tsv"; }

run_wrk() { # target conns seconds -> "rps p50_ms p99_ms requests non2xx socket_errors"
  local t=$1 c=$2 d=$3
  mapfile -t hdr < <(auth_args "$t")
  timeout $((d + 30)) taskset -c 1 wrk -t1 -c"$c" -d"${d}s" --latency --timeout 10s "${hdr[@]}" "$(url "$t" /echo)" |
    tee -a "$WORK/logs/wrk.log" | awk '
      function ms(v) { if (v ~ /us$/) return (v + 0) / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return (v + 0) * 1000; return v + 0 }
      $1 == "50%" { p50 = ms($2) }
      $1 == "99%" { p99 = ms($2) }
      / requests in / { req = $1 }
      /^Requests\/sec/ { rps = $2 }
      /Non-2xx/ { bad = $NF }
      /Socket errors/ { err = $4 + $6 + $8 + $10 }
      END { printf "%s %s %s %s %d %d\n", rps, p50, p99, req, bad, err }'
}

transfer() { # target method path -> "MB/s" (fails on a wrong status or size)
  local t=$1 method=$2 path=$3 out code size secs want
  mapfile -t hdr < <(auth_args "$t")
  if [ "$method" = GET ]; then
    want=$([ "$path" = /files/big.bin ] && echo "$DL_BYTES" || echo "$BIG_BYTES")
    out=$(taskset -c 1 curl -sS -o /dev/null --max-time 300 "${hdr[@]}" -w '%{http_code} %{size_download} %{time_total}' "$(url "$t" "$path")")
  else
    want=$UL_BYTES
    out=$(taskset -c 1 curl -sS -o "$WORK/upload.answer" --max-time 300 "${hdr[@]}" -X POST -H 'Expect:' \
      -H 'Content-Type: application/octet-stream' -T "$WORK/upload.bin" -w '%{http_code} %{size_upload} %{time_total}' "$(url "$t" "$path")")
    grep -q "\"bytes\":$UL_BYTES" "$WORK/upload.answer" || { log "$t: upload answer: $(head -c 200 "$WORK/upload.answer")"; return 1; }
  fi
  read -r code size secs <<<"$out"
  if [ "$code" != 200 ] || [ "$size" != "$want" ]; then
    log "$t: $method $path: status $code, $size bytes"
    return 1
  fi
  awk -v b="$size" -v s="$secs" 'BEGIN { printf "%.1f\n", b / s / 1e6 }'
}

measure_target() { # round target
  local r=$1 t=$2 sid ticks0 ticks1 out rps p50 p99 req bad err v
  if ! start_target "$t"; then
    log "$t: did not start; see $WORK/logs/$t.log"
    record "$r" "$t" failed start
    [ -z "$SERVER_PID" ] || stop_server "$SERVER_PID"
    return 0
  fi
  sid=$SERVER_PID
  if ! check_target "$t"; then
    record "$r" "$t" failed check
    [ -z "$sid" ] || stop_server "$sid"
    return 0
  fi
  [ -z "$READY_MS" ] || record "$r" "$t" ready_ms "$READY_MS"
  if [ -n "$sid" ]; then
    sleep 1
    record "$r" "$t" rss_idle_kib "$(mem_kib "$sid" VmRSS)"
  fi

  run_wrk "$t" "$CONNS" "$WARM" >/dev/null
  [ -z "$sid" ] || { reset_peak "$sid"; ticks0=$(cpu_ticks "$sid"); }
  read -r rps p50 p99 req bad err <<<"$(run_wrk "$t" "$CONNS" "$D64")"
  if [ -n "$sid" ] && [ "${req:-0}" -gt 0 ]; then
    ticks1=$(cpu_ticks "$sid")
    record "$r" "$t" rss_load_kib "$(mem_kib "$sid" VmHWM)"
    record "$r" "$t" cpu_us "$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.2f\n", d / hz * 1e6 / n }')"
  fi
  record "$r" "$t" rps64 "$rps"
  record "$r" "$t" p50_64 "$p50"
  record "$r" "$t" p99_64 "$p99"
  record "$r" "$t" errors64 $((bad + err))
  read -r rps p50 p99 req bad err <<<"$(run_wrk "$t" 1 "$D1")"
  record "$r" "$t" rps1 "$rps"
  record "$r" "$t" p50_1 "$p50"
  record "$r" "$t" p99_1 "$p99"

  # A transfer takes well under a second: three of each per round, all kept for the median.
  for _ in 1 2 3; do
    v=$(transfer "$t" GET /files/big.bin) && record "$r" "$t" dl_mbs "$v"
    v=$(transfer "$t" POST /upload) && record "$r" "$t" ul_mbs "$v"
  done

  if out=$(timeout 120 taskset -c 1 "$HELPER" sse "127.0.0.1:${PORT[$t]}" \
    "$([ "$t" = direct ] || echo /api/proxy)/sse?n=$SSE_N&every_ms=$SSE_EVERY" "$TOKEN"); then
    # "events N p50_us X p99_us Y max_us Z"
    read -r _ n _ p50 _ p99 _ _ <<<"$out"
    if [ "$n" = "$SSE_N" ]; then
      record "$r" "$t" sse_p50 "$(awk -v v="$p50" 'BEGIN { print v / 1000 }')"
      record "$r" "$t" sse_p99 "$(awk -v v="$p99" 'BEGIN { print v / 1000 }')"
    else
      log "$t: SSE: $n of $SSE_N events"
    fi
  else
    log "$t: SSE client failed"
  fi

  [ -z "$sid" ] || reset_peak "$sid"
  v=$(transfer "$t" GET /files/huge.bin) && record "$r" "$t" big_mbs "$v"
  [ -z "$sid" ] || record "$r" "$t" rss_stream_kib "$(mem_kib "$sid" VmHWM)"
  [ -z "$sid" ] || stop_server "$sid"
}

# The issue's "no growth after 1 million requests": RSS once the first million requests are
# through (the allocator has settled by then), and again after a second million.
growth() {
  local sid
  LOADED=0
  start_target cookiegate || return 0
  sid=$SERVER_PID
  load_requests cookiegate 1000000
  record growth cookiegate growth_rss_before_kib "$(mem_kib "$sid" VmRSS)"
  load_requests cookiegate 1000000
  record growth cookiegate growth_rss_after_kib "$(mem_kib "$sid" VmRSS)"
  record growth cookiegate growth_requests "$LOADED"
  stop_server "$sid"
}

load_requests() { # target n: wrk in 10 s runs until n more requests went through (at most 120 s)
  local t=$1 n=$2 done=0 deadline=$((SECONDS + 120)) rps p50 p99 req bad err
  while [ "$done" -lt "$n" ] && [ "$SECONDS" -lt "$deadline" ]; do
    read -r rps p50 p99 req bad err <<<"$(run_wrk "$t" "$CONNS" 10)"
    done=$((done + ${req:-0}))
  done
  LOADED=$((${LOADED:-0} + done))
}

machine() {
  echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  echo "- tools: $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v 2>/dev/null | head -1 | awk '{print "haproxy", $3}'), caddy $(caddy version 2>/dev/null | awk '{print $1}'), node $(node --version 2>/dev/null), next $(node -p 'require("'"$BENCH"'/nextjs/node_modules/next/package.json").version' 2>/dev/null), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), $(rustc --version | awk '{print $1, $2}')"
}

main() {
  local started=$SECONDS
  install_tools
  prepare
  build
  start_upstream
  log "targets: $TARGETS; $ROUNDS round(s); load ${D64}s at $CONNS connections, ${D1}s at 1"
  local load0 r t
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  for r in $(seq "$ROUNDS"); do
    for t in $TARGETS; do
      log "round $r/$ROUNDS: $t"
      measure_target "$r" "$t"
    done
  done
  if [ "$GROWTH" = 1 ] && [[ " $TARGETS " == *" cookiegate "* ]]; then
    log "cookiegate: memory after 1 million requests"
    growth
  fi
  # The token handler's own costs (session route against plain cookie route, single flight at
  # 1,000 concurrent requests), against the real test IdP; needs node. BENCH_SESSION=0 skips it.
  local session_report=""
  if [ "$QUICK" != 1 ] && [ "${BENCH_SESSION:-1}" = 1 ] && command -v node >/dev/null; then
    log "token handler: session route and single flight (bench/session.sh)"
    session_report=$(BENCH_WORK="$WORK/session" BENCH_ROUNDS="$ROUNDS" "$BENCH/session.sh" 2>>"$WORK/logs/session.log") ||
      log "bench/session.sh failed; see $WORK/logs/session.log"
  fi
  # WebSockets beside nginx (echo latency) and many idle sockets (RSS per socket); needs node.
  local ws_report=""
  if [ "$QUICK" != 1 ] && [ "${BENCH_WEBSOCKET:-1}" = 1 ] && command -v node >/dev/null; then
    log "websockets: echo latency beside nginx, idle sockets (bench/websocket.sh)"
    ws_report=$(BENCH_WORK="$WORK/websocket" BENCH_ROUNDS="$ROUNDS" "$BENCH/websocket.sh" 2>>"$WORK/logs/websocket.log") ||
      log "bench/websocket.sh failed; see $WORK/logs/websocket.log"
  fi
  local elapsed=$((SECONDS - started))
  {
    echo "Run of \`$([ "$QUICK" = 1 ] && echo 'BENCH_QUICK=1 ')bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS round(s), ${elapsed} s in all."
    echo
    machine
    echo "- load average (1/5/15 min) before: $load0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    python3 "$BENCH/report.py" "$WORK/results.tsv"
    if [ -n "$session_report" ]; then
      echo
      echo "$session_report"
    fi
    if [ -n "$ws_report" ]; then
      echo
      echo "$ws_report"
    fi
  } >"$WORK/report.md"
  [ -z "${BENCH_OUT:-}" ] || cp "$WORK/report.md" "$BENCH_OUT"
  cat "$WORK/report.md"
  log "raw results: $WORK/results.tsv; logs: $WORK/logs/"
}

main "$@"
