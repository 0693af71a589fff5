#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium (Playwright's own browser
# download cannot work on this network) and the pinned rsocket-js bundle for the
# browser example. Idempotent: does nothing when both are already there.
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
    (cd examples/browser && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npm run --silent build)
fi
