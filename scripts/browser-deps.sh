#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium (Playwright's own browser
# download cannot work on this network) and the pinned rsocket-js bundle for the
# browser example. Idempotent and quiet: installs only what is missing or stale
# (node_modules older than package-lock.json), then rebuilds the bundle (~2 s).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing: run 'sudo apt-get install -y chromium' for the browser tests" >&2
    fi
fi
if [ -f examples/browser/package.json ]; then
    cd examples/browser
    # npm records what it installed in node_modules/.package-lock.json; a newer lock file
    # means the pinned versions changed since.
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error >/dev/null
    fi
    npm run --silent build
fi
