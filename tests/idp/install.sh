#!/usr/bin/env bash
# Installs the test IdP's npm packages (oidc-provider, pinned by package-lock.json) once.
# Idempotent: does nothing when node_modules is there and matches the lockfile.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "tests/idp: node and npm are needed (Node 20 or later)" >&2
  exit 1
fi
# npm ci writes node_modules/.package-lock.json; newer than the lockfile means the install is
# current (a changed lockfile, pulled later, is newer and installs again).
if [ -f node_modules/.package-lock.json ] && [ -d node_modules/oidc-provider ] \
  && [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
