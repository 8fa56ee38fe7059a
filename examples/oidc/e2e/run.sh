#!/usr/bin/env bash
# End-to-end test of examples/oidc (the token handler) in Debian's Chromium.
#
# Installs what it needs (Debian's chromium, the test IdP's and this test's npm packages),
# builds cookiegate, starts the IdP (tests/idp), the example app and cookiegate on free loopback
# ports, runs e2e.test.mjs with node's test runner, and always stops what it started (by PID).
# Its output ends with node's pass/fail summary; the exit status is the test's.
#
#   examples/oidc/e2e/run.sh
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true

started_at=$(date +%s)
e2e=$(cd "$(dirname "$0")" && pwd)
example=$(dirname "$e2e")
root=$(cd "$example/../.." && pwd)
run="$e2e/.run"
export CARGO_TERM_COLOR=never
token_ttl=3

step() { echo "== $* ($(($(date +%s) - started_at))s)"; }

step "chromium"
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null

step "npm ci (test IdP, e2e)"
bash "$root/tests/idp/install.sh"
(cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error)

step "cargo build --release (cookiegate)"
(cd "$root" && cargo build --release --locked --quiet -p cookiegate --bin cookiegate)
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
cookiegate="$target_dir/release/cookiegate"

rm -rf "$run"
mkdir -p "$run"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Free loopback ports for the app and cookiegate (the IdP picks its own).
read -r app_port gw_port evil_port < <(node -e '
  const net = require("node:net");
  (async () => {
    const servers = [];
    for (let i = 0; i < 3; i++) {
      const s = net.createServer();
      await new Promise((ok) => s.listen(0, "127.0.0.1", ok));
      servers.push(s);
    }
    console.log(servers.map((s) => s.address().port).join(" "));
    servers.forEach((s) => s.close());
  })();')
gw="http://127.0.0.1:$gw_port"

step "start the IdP, the app and cookiegate"
IDP_REDIRECT_URIS="$gw/auth/callback" IDP_POST_LOGOUT_URIS="$gw/" \
  IDP_BACKCHANNEL_URI="$gw/auth/backchannel" IDP_ACCESS_TTL=$token_ttl IDP_CLIENT_SECRET=test-secret \
  node "$root/tests/idp/server.mjs" >"$run/idp.out" 2>"$run/idp.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$run/idp.out" ] && break; sleep 0.1; done
issuer=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").split("\n")[0]).issuer)' "$run/idp.out")

ISSUER="$issuer" APP_PORT=$app_port node "$example/app.mjs" 2>"$run/app.log" &
pids+=($!)

# Another origin (another port) with a page that tries to open the app's socket with the
# user's cookies, and reports in its title whether it could.
node -e '
  const [port, target] = process.argv.slice(1);
  const page = `<!doctype html><title>trying</title><script>
    const ws = new WebSocket(${JSON.stringify(target)});
    ws.onopen = () => { document.title = "opened"; };
    ws.onerror = ws.onclose = () => { if (document.title !== "opened") document.title = "refused"; };
  </script>`;
  require("node:http").createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(page);
  }).listen(Number(port), "127.0.0.1");' "$evil_port" "ws://127.0.0.1:$gw_port/ws" &
pids+=($!)

sed -e "s#^listen = .*#listen = \"127.0.0.1:$gw_port\"#" \
  -e "s#^issuer = .*#issuer = \"$issuer\"#" \
  -e "s#127.0.0.1:4000#127.0.0.1:$gw_port#g" \
  -e "s#127.0.0.1:8000#127.0.0.1:$app_port#g" \
  "$example/cookiegate.toml" >"$run/cookiegate.toml"
COOKIEGATE_SESSION_KEYS=$(node -e 'console.log(require("crypto").randomBytes(32).toString("base64"))') \
  COOKIEGATE_CLIENT_SECRET=test-secret \
  RUST_LOG=info "$cookiegate" --config "$run/cookiegate.toml" 2>"$run/cookiegate.log" &
pids+=($!)

# Ready when cookiegate answers and the page behind it too (node's fetch: no curl needed).
node -e '
  const url = process.argv[1];
  (async () => {
    for (let i = 0; i < 200; i++) {
      try { if ((await fetch(url)).ok) return; } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
    console.error(`not ready: ${url}`);
    process.exit(1);
  })();' "$gw/"


step "browser tests"
status=0
APP_URL="$gw" TOKEN_TTL=$token_ttl SCREENSHOT="$run/screenshot.png" EVIL_URL="http://127.0.0.1:$evil_port/" \
  node --test --test-reporter=spec "$e2e/e2e.test.mjs" || status=$?
if [ "$status" != 0 ]; then
  echo "--- cookiegate.log"; tail -n 40 "$run/cookiegate.log"
  echo "--- idp.log"; tail -n 40 "$run/idp.log"
  echo "--- app.log"; tail -n 20 "$run/app.log"
fi
# No secret in cookiegate's log (keys, client secret, tokens, cookie values).
if grep -E "test-secret|eyJ|Bearer " "$run/cookiegate.log"; then
  echo "a secret reached cookiegate's log" >&2
  status=1
fi
step "done"
exit "$status"
