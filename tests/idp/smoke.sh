#!/usr/bin/env bash
# Smoke check of the test IdP end to end, with curl, openssl and node only (no Rust):
# discovery, login over HTTP, code exchange (Basic auth + code_verifier), ID token and JWT access
# token signatures, refresh with rotation and reuse detection, introspection, revocation,
# back-channel logout (test trigger and RP-initiated logout) to a local listener, forgotten grants.
#
#   tests/idp/smoke.sh          (runs install.sh first; ends with "N passed, N failed")
#
# Starts the IdP and a back-channel listener on free 127.0.0.1 ports and stops both by PID.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true

here=$(cd "$(dirname "$0")" && pwd)
"$here/install.sh"

work=$(mktemp -d)
idp_pid=
listener_pid=
cleanup() {
  for pid in $idp_pid $listener_pid; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check "description" command...
  local what=$1
  shift
  if "$@" >"$work/check.out" 2>&1; then ok "$what"; else bad "$what: $(head -c 600 "$work/check.out")"; fi
}
# JSON field from stdin: json '.a.b' (node, so no jq needed)
json() {
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{let v=JSON.parse(s);for(const k of process.argv[1].split(".").filter(Boolean))v=v?.[k];process.stdout.write(typeof v==="string"?v:JSON.stringify(v)??"")})' "$1"
}
wait_for_line() { # file, seconds
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    [ -s "$1" ] && return 0
    sleep 0.05
  done
  return 1
}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# --- back-channel listener: appends each POST body as one line to bodies.txt ---------------------
cat >"$work/listener.mjs" <<'EOF'
import * as http from 'node:http';
import * as fs from 'node:fs';
const out = process.argv[2];
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    fs.appendFileSync(out, `${JSON.stringify({ method: req.method, path: req.url, type: req.headers['content-type'], body })}\n`);
    res.writeHead(200, { 'cache-control': 'no-store' });
    res.end();
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
process.on('SIGTERM', () => process.exit(0));
EOF
node "$work/listener.mjs" "$work/bodies.txt" >"$work/listener.port" &
listener_pid=$!
wait_for_line "$work/listener.port" 10
listener_port=$(cat "$work/listener.port")

# --- the IdP ----------------------------------------------------------------------------------
redirect_uri=http://127.0.0.1:9/auth/callback
post_logout=http://127.0.0.1:9/
started=$(date +%s%N)
IDP_REDIRECT_URIS=$redirect_uri IDP_POST_LOGOUT_URIS=$post_logout \
  IDP_BACKCHANNEL_URI=http://127.0.0.1:$listener_port/auth/backchannel \
  node "$here/server.mjs" >"$work/idp.out" 2>"$work/idp.err" &
idp_pid=$!
if ! wait_for_line "$work/idp.out" 20; then
  cat "$work/idp.err"
  echo "the IdP did not start"
  exit 1
fi
startup_ms=$((($(date +%s%N) - started) / 1000000))
issuer=$(json .issuer <"$work/idp.out")
echo "IdP at $issuer (pid $idp_pid), listening after ${startup_ms} ms; back-channel listener on :$listener_port"
check "stdout is exactly one JSON line" test "$(wc -l <"$work/idp.out")" -eq 1

# --- discovery --------------------------------------------------------------------------------
curl -sf "$issuer/.well-known/openid-configuration" >"$work/disc.json"
d() { json "$1" <"$work/disc.json"; }
check "discovery: issuer" test "$(d .issuer)" = "$issuer"
check "discovery: S256 only" test "$(d .code_challenge_methods_supported)" = '["S256"]'
check "discovery: back-channel logout with sessions" test "$(d .backchannel_logout_supported)$(d .backchannel_logout_session_supported)" = truetrue
check "discovery: revocation, introspection, end_session" test -n "$(d .revocation_endpoint)" -a -n "$(d .introspection_endpoint)" -a -n "$(d .end_session_endpoint)"
check "discovery: iss in the authorization response" test "$(d .authorization_response_iss_parameter_supported)" = true
token_ep=$(d .token_endpoint)
curl -sf "$(d .jwks_uri)" >"$work/jwks.json"

# JWT check with node: verifies the signature against the JWKS, prints {"header":..,"claims":..}
cat >"$work/jwt.mjs" <<'EOF'
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
const [token, jwksFile] = process.argv.slice(2);
const [h, p, s] = token.split('.');
const header = JSON.parse(Buffer.from(h, 'base64url'));
const claims = JSON.parse(Buffer.from(p, 'base64url'));
const jwk = JSON.parse(fs.readFileSync(jwksFile)).keys.find((k) => k.kid === header.kid);
if (!jwk) throw new Error(`no key ${header.kid}`);
if (header.alg !== 'RS256') throw new Error(`alg ${header.alg}`);
const good = crypto.verify('sha256', Buffer.from(`${h}.${p}`), crypto.createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url'));
if (!good) throw new Error('bad signature');
console.log(JSON.stringify({ header, claims }));
EOF
jwt() { node "$work/jwt.mjs" "$1" "$work/jwks.json"; }

# --- login over HTTP with curl (the sequence README.md documents) ----------------------------
# login USER -> sets code_verifier, nonce, state, code, session jar $work/USER.jar
login() {
  local user=$1 jar=$work/$1.jar loc
  code_verifier=$(openssl rand 32 | b64url)
  local challenge
  challenge=$(printf '%s' "$code_verifier" | openssl dgst -sha256 -binary | b64url)
  state=$(openssl rand 16 | b64url)
  nonce=$(openssl rand 16 | b64url)
  rm -f "$jar"
  hop() { # method url [form] -> prints the absolute Location
    local h
    if [ $# -gt 2 ]; then
      h=$(curl -s -o /dev/null -D - -b "$jar" -c "$jar" -X "$1" --data "$3" "$2")
    else
      h=$(curl -s -o /dev/null -D - -b "$jar" -c "$jar" -X "$1" "$2")
    fi
    local l
    l=$(printf '%s' "$h" | tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
    case "$l" in /*) l="$issuer$l" ;; esac
    [ -n "$l" ] || { echo "no redirect from $1 $2: $h" >&2; return 1; }
    printf '%s' "$l"
  }
  loc=$(hop GET "$(d .authorization_endpoint)?client_id=cookiegate&response_type=code&scope=openid+profile+email+offline_access&redirect_uri=$(node -p 'encodeURIComponent(process.argv[1])' "$redirect_uri")&state=$state&nonce=$nonce&code_challenge=$challenge&code_challenge_method=S256")
  loc=$(hop POST "$loc" "prompt=login&login=$user&password=x") # /interaction/UID (login)
  loc=$(hop GET "$loc")                                          # /auth/UID (resume)
  loc=$(hop POST "$loc" "prompt=consent")                        # /interaction/UID2 (consent)
  loc=$(hop GET "$loc")                                          # /auth/UID2 (resume)
  final=$loc
  code=$(node -p 'new URL(process.argv[1]).searchParams.get("code")' "$final")
}
# redeem -> token response JSON in $work/tokens.json, status in $status
redeem() {
  status=$(curl -s -o "$work/tokens.json" -w '%{http_code}' -u cookiegate:test-secret \
    --data-urlencode grant_type=authorization_code --data-urlencode "code=$code" \
    --data-urlencode "redirect_uri=$redirect_uri" --data-urlencode "code_verifier=$code_verifier" "$token_ep")
}
refresh() { # refresh RT -> response in $work/refresh.json, status in $status
  status=$(curl -s -o "$work/refresh.json" -w '%{http_code}' -u cookiegate:test-secret \
    --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$1" "$token_ep")
}
stats() { curl -sf "$issuer/test/stats?sub=$1" | json ".$2"; }

login alice
qp() { node -p 'new URL(process.argv[1]).searchParams.get(process.argv[2]) ?? ""' "$final" "$1"; }
check "login: redirect to redirect_uri" test "${final%%\?*}" = "$redirect_uri"
check "login: state and iss returned" test "$(qp state)|$(qp iss)" = "$state|$issuer"
check "login: a code" test -n "$code"

# PKCE is required: an authorization request without code_challenge is refused (error redirect).
no_pkce=$(curl -s -o /dev/null -w '%{redirect_url}' "$(d .authorization_endpoint)?client_id=cookiegate&response_type=code&scope=openid&redirect_uri=$redirect_uri&state=s")
check "PKCE required: no code_challenge -> invalid_request" grep -q 'error=invalid_request' <<<"$no_pkce"

# prompt=none without an IdP session: login_required at the redirect URI.
pkce_ok="code_challenge=3EbsvOobX8pwblcgbnWHHD4zuU2eT59J5fbxYyNwV2g&code_challenge_method=S256"
none_loc=$(curl -s -o /dev/null -w '%{redirect_url}' "$(d .authorization_endpoint)?client_id=cookiegate&response_type=code&scope=openid&redirect_uri=$redirect_uri&state=s&prompt=none&$pkce_ok")
check "prompt=none without a session -> error=login_required" grep -q 'error=login_required' <<<"$none_loc"
# With the IdP session (alice's jar) a new authorization request comes straight back with a code.
sso_loc=$(curl -s -o /dev/null -w '%{redirect_url}' -b "$work/alice.jar" "$(d .authorization_endpoint)?client_id=cookiegate&response_type=code&scope=openid&redirect_uri=$redirect_uri&state=s2&$pkce_ok")
check "single sign-on: with _session, straight to the redirect URI with a code" grep -q "^$redirect_uri?code=.*&state=s2&iss=" <<<"$sso_loc"

# The access token lives 5 s: everything that needs it alive runs first, checks come after.
tintro() { curl -s --data-urlencode "token=$1" "$issuer/test/introspect"; }
intro() { curl -s -u cookiegate:test-secret --data-urlencode "token=$1" "$(d .introspection_endpoint)"; }
fields() { node -e 'const o=JSON.parse(require("fs").readFileSync(process.argv[1]));for(const k of process.argv.slice(2))console.log(o[k]??"")' "$@"; }
redeem
exchange_status=$status
{ read -r id_token; read -r access_token; read -r refresh_token; } < <(fields "$work/tokens.json" id_token access_token refresh_token)
tintro "$access_token" >"$work/tintro1.json"
refresh "$refresh_token"
refresh_status=$status
cp "$work/refresh.json" "$work/refresh1.json"
tintro "$access_token" >"$work/tintro2.json"
refresh "$refresh_token"
reuse_status=$status
cp "$work/refresh.json" "$work/refresh2.json"

check "code exchange (Basic + code_verifier): 200" test "$exchange_status" = 200
check "code exchange: refresh token issued" test -n "$refresh_token"

jwt "$id_token" >"$work/idt.json"
c() { json "$1" <"$2"; }
check "ID token: RS256 signature verifies against the JWKS" test "$(c .header.alg "$work/idt.json")" = RS256
check "ID token: iss, aud, nonce" test "$(c .claims.iss "$work/idt.json")|$(c .claims.aud "$work/idt.json")|$(c .claims.nonce "$work/idt.json")" = "$issuer|cookiegate|$nonce"
check "ID token: profile and email claims" test "$(c .claims.email "$work/idt.json")|$(c .claims.name "$work/idt.json")" = "alice@example.com|Alice Example"
alice_sid=$(c .claims.sid "$work/idt.json")
check "ID token: sid" test -n "$alice_sid"

jwt "$access_token" >"$work/at.json"
check "access token: a JWT (typ at+jwt, RS256)" test "$(c .header.typ "$work/at.json")|$(c .header.alg "$work/at.json")" = "at+jwt|RS256"
at_life=$(($(c .claims.exp "$work/at.json") - $(c .claims.iat "$work/at.json")))
check "access token: exp - iat = 5 s" test "$at_life" = 5
check "access token: sub, client_id, aud" test "$(c .claims.sub "$work/at.json")|$(c .claims.client_id "$work/at.json")|$(c .claims.aud "$work/at.json")" = "alice|cookiegate|urn:cookiegate:test-api"
# Introspection: the JWT access token at /test/introspect, since oidc-provider's endpoint answers
# unsupported_token_type for structured tokens; refresh tokens (opaque) at the real endpoint.
check "/test/introspect: fresh access token active, sub alice" test "$(c .active "$work/tintro1.json")|$(c .sub "$work/tintro1.json")" = "true|alice"
check "introspection endpoint: JWT access token refused (unsupported_token_type)" test "$(intro "$access_token" | json .error)" = unsupported_token_type

# Refresh with rotation; reusing the consumed refresh token revokes the grant.
check "refresh: 200" test "$refresh_status" = 200
{ read -r rt2; read -r at2; } < <(fields "$work/refresh1.json" refresh_token access_token)
check "refresh: rotated (new refresh token)" test -n "$rt2" -a "$rt2" != "$refresh_token"
check "refresh: new access token is a JWT for alice" test "$(jwt "$at2" | json .claims.sub)" = alice
check "refresh: the old access token stays active (until it expires)" test "$(c .active "$work/tintro2.json")" = true
check "reuse of the consumed refresh token: 400 invalid_grant" test "$reuse_status|$(c .error "$work/refresh2.json")" = "400|invalid_grant"
refresh "$rt2"
check "grant revoked by the reuse: the new refresh token is dead too" test "$status|$(json .error <"$work/refresh.json")" = "400|invalid_grant"
check "grant revoked: the new access token is inactive at /test/introspect" test "$(tintro "$at2" | json .reason)" = "grant revoked"
check "stats(alice): 1 code grant, 1 refresh grant, 2 refresh errors, 1 grant revoked" \
  test "$(stats alice code_grants),$(stats alice refresh_grants),$(stats alice refresh_errors),$(stats alice grants_revoked)" = "1,1,2,1"

# A code is single use; redeeming it again revokes what it gave (here: carol's grant).
login carol
redeem
carol_rt=$(json .refresh_token <"$work/tokens.json")
redeem
check "code replay: second exchange 400 invalid_grant" test "$status|$(json .error <"$work/tokens.json")" = "400|invalid_grant"
refresh "$carol_rt"
check "code replay: the grant is revoked (refresh -> invalid_grant)" test "$(json .error <"$work/refresh.json")" = invalid_grant

# Access token expiry (5 s).
login alice2
redeem
at_exp=$(json .access_token <"$work/tokens.json")
sleep 6
check "access token expired after 5 s at /test/introspect" test "$(tintro "$at_exp" | json .reason)" = expired

# Revocation (RFC 7009).
login bob
redeem
bob_rt=$(json .refresh_token <"$work/tokens.json")
bob_at=$(json .access_token <"$work/tokens.json")
check "introspection endpoint: refresh token active" test "$(intro "$bob_rt" | json .active)|$(intro "$bob_rt" | json .sub)" = "true|bob"
rstatus=$(curl -s -o /dev/null -w '%{http_code}' -u cookiegate:test-secret --data-urlencode "token=$bob_rt" \
  --data-urlencode token_type_hint=refresh_token "$(d .revocation_endpoint)")
check "revocation: 200" test "$rstatus" = 200
check "revocation: refresh token inactive" test "$(intro "$bob_rt" | json .active)" = false
refresh "$bob_rt"
check "revocation: refresh afterwards -> invalid_grant" test "$(json .error <"$work/refresh.json")" = invalid_grant
check "revocation: the grant went with it (access token inactive)" test "$(tintro "$bob_at" | json .active)" = false
check "stats(bob): 1 revocation" test "$(stats bob revocations)" = 1

# Forgotten grants: a later refresh gets invalid_grant.
login erin
redeem
erin_rt=$(json .refresh_token <"$work/tokens.json")
check "forget-grants?sub=erin: 1 forgotten" test "$(curl -s -X POST "$issuer/test/forget-grants?sub=erin" | json .forgotten)" = 1
refresh "$erin_rt"
check "forgotten grant: refresh -> invalid_grant" test "$status|$(json .error <"$work/refresh.json")" = "400|invalid_grant"

# Back-channel logout through the test trigger.
: >"$work/bodies.txt"
curl -s -X POST "$issuer/test/backchannel?sub=alice" >"$work/bc.json"
check "/test/backchannel?sub=alice: 1 sent" test "$(json .sent <"$work/bc.json")" = 1
check "back-channel: one POST at the listener" test "$(wc -l <"$work/bodies.txt")" = 1
bc_body=$(head -1 "$work/bodies.txt")
check "back-channel: form POST to /auth/backchannel" test "$(json .method <<<"$bc_body") $(json .path <<<"$bc_body") $(json .type <<<"$bc_body")" = "POST /auth/backchannel application/x-www-form-urlencoded"
logout_token=$(node -p 'new URLSearchParams(process.argv[1]).get("logout_token")' "$(json .body <<<"$bc_body")")
jwt "$logout_token" >"$work/lt.json"
check "logout token: RS256 signature verifies, typ logout+jwt" test "$(c .header.typ "$work/lt.json")" = logout+jwt
check "logout token: iss, aud, sub, sid of alice's session" \
  test "$(c .claims.iss "$work/lt.json")|$(c .claims.aud "$work/lt.json")|$(c .claims.sub "$work/lt.json")|$(c .claims.sid "$work/lt.json")" = "$issuer|cookiegate|alice|$alice_sid"
check "logout token: events member, jti, iat, exp, no nonce" \
  test "$(c .claims.events "$work/lt.json")|$(node -e 'const c=JSON.parse(process.argv[1]).claims;console.log(typeof c.jti,typeof c.iat,c.exp-c.iat,"nonce" in c)' "$(cat "$work/lt.json")")" \
  = '{"http://schemas.openid.net/event/backchannel-logout":{}}|string number 120 false'
check "stats(alice): backchannel_sent 1" test "$(stats alice backchannel_sent)" = 1
check "/test/backchannel?sub=alice again: 404 (session ended)" test "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$issuer/test/backchannel?sub=alice")" = 404

# RP-initiated logout: end_session -> confirm form -> back-channel POST + redirect to post_logout_redirect_uri.
login dave
redeem
dave_idt=$(json .id_token <"$work/tokens.json")
dave_sid=$(jwt "$dave_idt" | json .claims.sid)
: >"$work/bodies.txt"
form=$(curl -s -b "$work/dave.jar" -c "$work/dave.jar" "$(d .end_session_endpoint)?id_token_hint=$dave_idt&post_logout_redirect_uri=$(node -p 'encodeURIComponent(process.argv[1])' "$post_logout")&state=bye")
xsrf=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' <<<"$form")
end_loc=$(curl -s -o /dev/null -w '%{redirect_url}' -b "$work/dave.jar" -c "$work/dave.jar" --data "xsrf=$xsrf&logout=yes" "$issuer/session/end/confirm")
check "end_session: redirect to post_logout_redirect_uri with state" test "$end_loc" = "${post_logout}?state=bye"
lt2=$(node -p 'new URLSearchParams(JSON.parse(process.argv[1]).body).get("logout_token")' "$(head -1 "$work/bodies.txt")")
check "end_session: back-channel logout token for dave's sid" test "$(jwt "$lt2" | json .claims.sid)" = "$dave_sid"

# Client metadata at run time.
check "POST /test/client: invalid metadata -> 400" test "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data '{"redirect_uris":["ftp://x"]}' "$issuer/test/client")" = 400
curl -s -X POST --data "{\"redirect_uris\":[\"$redirect_uri\",\"http://127.0.0.1:8/other\"]}" "$issuer/test/client" >"$work/client.json"
check "POST /test/client: redirect_uris replaced, back-channel URI kept" \
  test "$(json .redirect_uris <"$work/client.json")|$(json .backchannel_logout_uri <"$work/client.json" | cut -d/ -f4-)" = "[\"$redirect_uri\",\"http://127.0.0.1:8/other\"]|auth/backchannel"
other_loc=$(curl -s -o /dev/null -w '%{redirect_url}' "$(d .authorization_endpoint)?client_id=cookiegate&response_type=code&scope=openid&redirect_uri=http://127.0.0.1:8/other&state=s&prompt=none&$pkce_ok")
check "POST /test/client: the new redirect URI is accepted" grep -q '^http://127.0.0.1:8/other?error=login_required' <<<"$other_loc"

# Totals and shutdown.
curl -sf "$issuer/test/stats" >"$work/stats.json"
echo "stats: $(cat "$work/stats.json")"
check "stats: totals add up (6 code grants, 2 back-channel sent, 0 errors)" \
  test "$(json .code_grants <"$work/stats.json"),$(json .backchannel_sent <"$work/stats.json"),$(json .backchannel_errors <"$work/stats.json")" = "6,2,0"
kill "$idp_pid"
stop_rc=0
wait "$idp_pid" || stop_rc=$?
idp_pid=
check "IdP stopped by PID (SIGTERM, exit 0)" test "$stop_rc" = 0
if [ "$failed" -gt 0 ]; then
  echo "--- IdP stderr"
  cat "$work/idp.err"
fi
echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
