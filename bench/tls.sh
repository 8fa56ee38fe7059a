#!/usr/bin/env bash
# TLS termination, cookiegate (`[tls]`) beside nginx (`listen ... ssl http2`), same job (cookie
# in, `Authorization: Bearer` out, no buffering), same certificate (tests/fixtures/tls, ECDSA
# P-256), same upstream (bench/targets/upstream-nginx.conf):
#
# 1. small GET over kept-alive HTTP/1.1 TLS connections: wrk, 64 connections;
# 2. a new TLS connection per request (full handshake each time): wrk with `Connection: close`,
#    16 connections, for half as long;
# 3. a 100 MiB download, over HTTP/1.1 and over HTTP/2 (curl; three of each per round).
#
#   bench/tls.sh                     (BENCH_WORK scratch folder, BENCH_ROUNDS=3, BENCH_SECONDS=10)
#
# Rounds interleave the two targets; the report gives medians and cookiegate / nginx ratios
# (above 1 is better for cookiegate on rates and throughput). Both proxies run single-threaded
# pinned to CPU 0; wrk, curl and the upstream run on CPU 1; all on 127.0.0.1. Installs nginx, wrk
# and curl from Debian if missing. Prints a Markdown report; every server started here is
# stopped on exit.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
set +m
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_WORK:-/tmp/cookiegate-tls-bench}
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}
TOKEN="bench.TOKEN-0123456789_abcdefghijklmnopqrstuvwxyz"
DL_BYTES=$((100 * 1024 * 1024))
CERT="$REPO/tests/fixtures/tls/localhost.pem"
KEY="$REPO/tests/fixtures/tls/localhost.key"
CA="$REPO/tests/fixtures/tls/ca.pem"
declare -A PORT=([cookiegate]=18501 [nginx]=18502)
export PATH="$PATH:/usr/sbin"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=()
for tool in nginx wrk curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked --quiet --bin cookiegate
CG_BIN="$REPO/target/release/cookiegate"

rm -rf "$WORK" && mkdir -p "$WORK"/{upstream,nginx,logs,www/files}
truncate -s "$DL_BYTES" "$WORK/www/files/big.bin"
sed "s#@WORK@#$WORK#g" bench/targets/upstream-nginx.conf >"$WORK/upstream-nginx.conf"
: >"$WORK/results.tsv"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$WORK/cookiegate.toml" <<TOML
listen = "127.0.0.1:${PORT[cookiegate]}"
[server]
workers = 1
[log]
level = "warn"
[tls]
cert = "$CERT"
key = "$KEY"
[[routes]]
prefix = "/api/proxy"
upstream = "http://127.0.0.1:18080"
cookie = "auth_token"
max_body = "1GiB"
TOML
# bench/targets/nginx.conf, with TLS on its listener: one worker, keep-alive upstream, no
# buffering, TLS 1.2 and 1.3, h2 by ALPN, the same certificate.
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream api {
        server 127.0.0.1:18080;
        keepalive 128;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl http2 backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        location /api/proxy/ {
            default_type application/json;
            if (\$cookie_auth_token = "") {
                return 401 '{"error":"not authenticated"}';
            }
            proxy_pass http://api/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer \$cookie_auth_token";
            proxy_set_header Cookie "";
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_buffering off;
            proxy_request_buffering off;
            client_max_body_size 0;
        }
    }
}
CONF

start() { # name cpu cmd... -> the pid of a new session
  local name=$1 cpu=$2
  shift 2
  setsid taskset -c "$cpu" "$@" >"$WORK/logs/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

stop() { # pid
  kill -TERM -- "-$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

start upstream 1 nginx -p "$WORK/upstream" -c "$WORK/upstream-nginx.conf" -e "$WORK/upstream/error.log" -g 'daemon off;'
for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:18080/echo 2>/dev/null && break; sleep 0.05; done

url() { echo "https://localhost:${PORT[$1]}/api/proxy$2"; }
resolve() { echo "--resolve" "localhost:${PORT[$1]}:127.0.0.1"; }

start_target() { # target -> TARGET_PID, once it answers with the bearer upstream
  case $1 in
    cookiegate) start cookiegate 0 "$CG_BIN" --config "$WORK/cookiegate.toml" ;;
    nginx) start nginx 0 nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' ;;
  esac
  TARGET_PID=$STARTED
  local body
  for _ in $(seq 100); do
    # shellcheck disable=SC2046
    body=$(curl -sS --cacert "$CA" $(resolve "$1") -H "Cookie: auth_token=$TOKEN" "$(url "$1" /echo)" 2>/dev/null) &&
      [[ "$body" == *"Bearer $TOKEN"* ]] && return 0
    sleep 0.1
  done
  log "$1 did not answer over TLS; see $WORK/logs/"
  return 1
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$WORK/results.tsv"; }

wrk_rps() { # target conns seconds [extra header] -> "rps p99_ms errors"
  local t=$1 c=$2 d=$3 extra=${4:-}
  local args=(-t1 -c"$c" -d"${d}s" --latency --timeout 10s -H "Cookie: theme=dark; auth_token=$TOKEN")
  [ -z "$extra" ] || args+=(-H "$extra")
  # wrk connects to 127.0.0.1 (it sends no SNI for an IP); both servers have one certificate.
  timeout $((d + 30)) taskset -c 1 wrk "${args[@]}" "https://127.0.0.1:${PORT[$t]}/api/proxy/echo" |
    tee -a "$WORK/logs/wrk.log" | awk '
      function ms(v) { if (v ~ /us$/) return (v + 0) / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return (v + 0) * 1000; return v + 0 }
      $1 == "99%" { p99 = ms($2) }
      /^Requests\/sec/ { rps = $2 }
      /Non-2xx/ { bad = $NF }
      /Socket errors/ { err = $4 + $6 + $8 + $10 }
      END { printf "%s %s %d\n", rps, p99, bad + err }'
}

download() { # target http-flag -> MB/s (fails on a wrong status or size)
  local t=$1 flag=$2 out code size secs
  # shellcheck disable=SC2046
  out=$(taskset -c 1 curl -sS "$flag" --cacert "$CA" $(resolve "$t") -o /dev/null --max-time 300 \
    -H "Cookie: auth_token=$TOKEN" -w '%{http_code} %{size_download} %{time_total} %{http_version}' \
    "$(url "$t" /files/big.bin)")
  read -r code size secs version <<<"$out"
  if [ "$code" != 200 ] || [ "$size" != "$DL_BYTES" ]; then
    log "$t: download $flag: status $code, $size bytes"
    return 1
  fi
  [ "$flag" != --http2 ] || [ "$version" = 2 ] || { log "$t: --http2 gave HTTP/$version"; return 1; }
  awk -v b="$size" -v s="$secs" 'BEGIN { printf "%.1f\n", b / s / 1e6 }'
}

for r in $(seq "$ROUNDS"); do
  for t in cookiegate nginx; do
    log "round $r/$ROUNDS: $t"
    start_target "$t" || { stop "$TARGET_PID"; continue; }
    wrk_rps "$t" 64 2 >/dev/null
    read -r rps p99 errors <<<"$(wrk_rps "$t" 64 "$SECS")"
    record "$r" "$t" keepalive_rps "$rps"
    record "$r" "$t" keepalive_p99_ms "$p99"
    record "$r" "$t" keepalive_errors "$errors"
    # Shorter: each request leaves a socket in TIME_WAIT.
    read -r rps p99 errors <<<"$(wrk_rps "$t" 16 "$(((SECS + 1) / 2))" "Connection: close")"
    record "$r" "$t" handshake_rps "$rps"
    record "$r" "$t" handshake_errors "$errors"
    for _ in 1 2 3; do
      v=$(download "$t" --http1.1) && record "$r" "$t" dl_h1_mbs "$v"
      v=$(download "$t" --http2) && record "$r" "$t" dl_h2_mbs "$v"
    done
    stop "$TARGET_PID"
  done
done

python3 - "$WORK/results.tsv" "$ROUNDS" "$SECS" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
vals = {}
for _, target, metric, value in rows:
    vals.setdefault((target, metric), []).append(float(value))
def med(t, m):
    v = vals.get((t, m))
    return statistics.median(v) if v else None
measures = [
    ("small GET, 64 kept-alive HTTP/1.1 connections (req/s)", "keepalive_rps", True),
    ("  p99 latency (ms)", "keepalive_p99_ms", False),
    ("new TLS connection per request, 16 at once (req/s)", "handshake_rps", True),
    ("100 MiB download, HTTP/1.1 (MB/s)", "dl_h1_mbs", True),
    ("100 MiB download, HTTP/2 (MB/s)", "dl_h2_mbs", True),
]
print(f"TLS termination, medians of {sys.argv[2]} interleaved round(s), {sys.argv[3]} s per load:")
print()
print("| measure | cookiegate | nginx | cookiegate / nginx |")
print("| --- | ---: | ---: | ---: |")
for label, metric, _ in measures:
    c, n = med("cookiegate", metric), med("nginx", metric)
    fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}")
    ratio = f"{c / n:.2f}" if c is not None and n else "-"
    print(f"| {label} | {fmt(c)} | {fmt(n)} | {ratio} |")
errors = {
    t: sum(sum(vals.get((t, m), [])) for m in ("keepalive_errors", "handshake_errors"))
    for t in ("cookiegate", "nginx")
}
print()
print(f"Errors (non-2xx or socket errors under load): cookiegate {errors['cookiegate']:.0f}, nginx {errors['nginx']:.0f}.")
PY
log "raw results: $WORK/results.tsv; logs: $WORK/logs/"
