#!/usr/bin/env bash
# Install test of the Debian package: builds it with `cargo deb`, installs it with `dpkg -i`,
# checks where its files went, validates the installed default config with the installed binary,
# then runs /usr/bin/cookiegate (as nobody, like the unit's DynamicUser) in front of a tiny
# upstream and proxies one request with a cookie through it: the upstream must see
# `Authorization: Bearer <cookie value>` and no Cookie header. Stops what it started by PID and
# purges the package, also on failure. Runs as root (CI); safe to rerun.
#
#   bash packaging/deb-test.sh
#
# Needs cargo, dpkg and python3 (upstream and client). Installs cargo-deb, pinned below, when
# `cargo deb` is missing or another version.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true

cargo_deb_version=3.8.0
root=$(cd "$(dirname "$0")/.." && pwd)
started_at=$(date +%s)
export CARGO_TERM_COLOR=never

step() { echo "== $* ($(($(date +%s) - started_at))s)"; }
fail() {
  echo "deb-test: FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root: it installs and removes the cookiegate package"

# A cookiegate package already here was either left by a run that was killed, or someone's real
# installation with their own config: purge the first only where that is certain (CI).
if dpkg-query -W -f='${Status}' cookiegate 2>/dev/null | grep -q 'installed\|config-files'; then
  if [ "${CI:-}" = true ]; then
    dpkg -P cookiegate >/dev/null
  else
    fail "a cookiegate package is installed and this test would purge it (with its config): run 'dpkg -P cookiegate' first, or set CI=true"
  fi
fi

tmp=$(mktemp -d /tmp/cookiegate-deb-test.XXXXXX)
chmod 755 "$tmp" # the proxy runs as nobody and reads its config here
pids=()
installed=false
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$installed" = true ]; then dpkg -P cookiegate >/dev/null 2>&1 || true; fi
  if [ "$status" != 0 ]; then
    for log in "$tmp"/*.log; do
      [ -s "$log" ] && { echo "--- $log"; tail -n 30 "$log"; }
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

step "cargo-deb $cargo_deb_version"
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  # Its own temporary target directory: cargo-deb's build shares nothing with cookiegate's.
  env -u CARGO_TARGET_DIR cargo install cargo-deb --version "$cargo_deb_version" --locked --quiet
fi
cargo deb --version

step "cargo deb --locked (the release binary, then the package)"
# The last line of cargo-deb's standard output is the package's path.
deb=$(cd "$root" && cargo deb --locked --quiet | tail -n 1)
[ -f "$deb" ] || fail "cargo deb printed no package path (got '$deb')"
echo "$deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'

step "dpkg -i"
installed=true
dpkg -i "$deb"
[ "$(dpkg-query -W -f='${Status}' cookiegate)" = "install ok installed" ] ||
  fail "dpkg reports cookiegate as '$(dpkg-query -W -f='${Status}' cookiegate)'"

step "installed files"
dpkg -L cookiegate >"$tmp/files.txt"
for path in /usr/bin/cookiegate /etc/cookiegate/cookiegate.toml \
  /usr/lib/systemd/system/cookiegate.service /usr/share/doc/cookiegate/copyright \
  /usr/share/doc/cookiegate/README.md /usr/share/doc/cookiegate/LICENSE-MIT \
  /usr/share/doc/cookiegate/LICENSE-APACHE; do
  grep -qx "$path" "$tmp/files.txt" || fail "dpkg -L cookiegate does not list $path"
  [ -f "$path" ] || fail "$path is listed but missing"
done
[ -x /usr/bin/cookiegate ] || fail "/usr/bin/cookiegate is not executable"
[ "$(stat -c %a /etc/cookiegate/cookiegate.toml)" = 644 ] || fail "the config's mode is not 0644"
# A conffile: dpkg keeps the administrator's edits on upgrade and asks before replacing them.
dpkg-query -W -f='${Conffiles}\n' cookiegate | grep -q '^ /etc/cookiegate/cookiegate.toml ' ||
  fail "/etc/cookiegate/cookiegate.toml is not a conffile"
unit=/usr/lib/systemd/system/cookiegate.service
for line in 'ExecStart=/usr/bin/cookiegate --config /etc/cookiegate/cookiegate.toml' \
  'EnvironmentFile=-/etc/cookiegate/env' 'DynamicUser=yes' 'NoNewPrivileges=yes' \
  'ProtectSystem=strict' 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' \
  'AmbientCapabilities=CAP_NET_BIND_SERVICE' 'KillSignal=SIGTERM' 'TimeoutStopSec=35' \
  'ExecReload=/bin/kill -HUP $MAINPID'; do
  grep -qxF "$line" "$unit" || fail "$unit lacks '$line'"
done
# Installing must not enable or start anything (containers, CI).
if [ -e /etc/systemd/system/multi-user.target.wants/cookiegate.service ]; then
  fail "installing enabled cookiegate.service"
fi
if command -v systemd-analyze >/dev/null; then
  # Offline checks (no running systemd needed): every directive known and well-formed, the
  # ExecStart binary present. It prints nothing when all is well.
  systemd-analyze verify "$unit" >"$tmp/verify.log" 2>&1 || true
  if [ -s "$tmp/verify.log" ]; then
    cat "$tmp/verify.log"
    fail "systemd-analyze verify $unit found problems"
  fi
fi

step "cookiegate check on the installed default config"
/usr/bin/cookiegate --version
/usr/bin/cookiegate check --config /etc/cookiegate/cookiegate.toml

step "one request through the installed binary"
# The upstream: binds 127.0.0.1:0, prints its port, answers every request with the Authorization
# and Cookie headers it saw (JSON), and logs them.
cat >"$tmp/upstream.py" <<'EOF'
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        seen = {"path": self.path, "authorization": self.headers.get("Authorization"), "cookie": self.headers.get("Cookie")}
        print(json.dumps(seen), file=sys.stderr, flush=True)
        body = json.dumps(seen).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
server = HTTPServer(("127.0.0.1", 0), Echo)
print(server.server_address[1], flush=True)
server.serve_forever()
EOF
python3 "$tmp/upstream.py" >"$tmp/upstream.port" 2>"$tmp/upstream.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/upstream.port" ] && break; sleep 0.1; done
upstream_port=$(head -n 1 "$tmp/upstream.port")
[ -n "$upstream_port" ] || fail "the upstream did not start"

# Port 0: the kernel picks a free one, read back from the "listening" log line.
cat >"$tmp/cookiegate.toml" <<EOF
listen = "127.0.0.1:0"

[[routes]]
prefix = "/api/proxy"
upstream = "http://127.0.0.1:$upstream_port"
cookie = "auth_token"
EOF
chmod 644 "$tmp/cookiegate.toml"
setpriv --reuid=nobody --regid=nogroup --clear-groups \
  /usr/bin/cookiegate --config "$tmp/cookiegate.toml" 2>"$tmp/cookiegate.log" &
pids+=($!)
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/.*cookiegate listening.*addr[":=]*\([0-9.]*:[0-9]*\).*/\1/p' "$tmp/cookiegate.log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "${pids[-1]}" 2>/dev/null || fail "cookiegate exited before listening"
  sleep 0.1
done
[ -n "$addr" ] || fail "cookiegate did not log its listening address"
echo "cookiegate on $addr, upstream on 127.0.0.1:$upstream_port"

token="deb-test-$RANDOM$RANDOM"
python3 - "$addr" "$token" <<'EOF'
import json, sys, urllib.request
addr, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"http://{addr}/api/proxy/items?a=1&a=2", headers={"Cookie": f"auth_token={token}"})
with urllib.request.urlopen(req, timeout=10) as res:
    status, seen = res.status, json.load(res)
print(status, seen["path"])
assert status == 200, status
assert seen["path"] == "/items?a=1&a=2", seen["path"]
assert seen["authorization"] == f"Bearer {token}", "the upstream did not get the cookie as a bearer token"
assert seen["cookie"] is None, "the browser's Cookie header reached the upstream"
EOF
grep -qF "\"authorization\": \"Bearer $token\"" "$tmp/upstream.log" ||
  fail "the upstream's log has no 'Authorization: Bearer <cookie value>'"

step "stop (SIGTERM) and dpkg -r"
kill -TERM "${pids[-1]}"
status=0
wait "${pids[-1]}" || status=$?
[ "$status" = 0 ] || fail "cookiegate exited with $status on SIGTERM"
unset 'pids[-1]'
dpkg -r cookiegate >/dev/null
[ ! -e /usr/bin/cookiegate ] || fail "dpkg -r left /usr/bin/cookiegate"
# Removal keeps the conffile (so a reinstall finds the administrator's config); purge drops it.
[ -f /etc/cookiegate/cookiegate.toml ] || fail "dpkg -r removed the conffile"
dpkg -P cookiegate >/dev/null
installed=false
[ ! -e /etc/cookiegate ] || fail "dpkg -P left /etc/cookiegate"
[ ! -e /etc/systemd/system/cookiegate.service ] || fail "dpkg -P left the unit masked"

step "deb-test passed"
