#!/usr/bin/env bash
# Installs the npm packages the process-level tests drive cmcp with (the
# official MCP TypeScript SDK client and conformance suite), pinned by
# tests/node/package-lock.json. Re-runs only when the lock file changed.
set -euo pipefail
cd "$(dirname "$0")/../tests/node"
stamp=node_modules/.cmcp-installed
if [ -f "$stamp" ] && [ "$stamp" -nt package-lock.json ]; then
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
touch "$stamp"
