#!/usr/bin/env bash
# Install the Learning Record Store and the xAPI validator the xAPI tests use
# (tests/test_xapi.py): Learning Locker's xapi-statements (an LRS, run with its
# in-memory repository) and xapi-validation, from npm at the versions pinned in
# tests/lrs/package-lock.json, into tests/lrs/node_modules. Install scripts are
# not run (only optional postinstall notices and a native metrics add-on).
# Without Node.js/npm the xAPI tests skip with a message, except under CI=true.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../tests/lrs" && pwd)"
installed() { [ -f "$dir/node_modules/xapi-statements/dist/index.js" ] && [ -f "$dir/node_modules/xapi-validation/dist/index.js" ]; }
if installed && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "ensure-lrs: Node.js and npm are required under CI for the xAPI tests" >&2
    exit 1
  fi
  echo "ensure-lrs: Node.js/npm not installed; the xAPI tests will be skipped" >&2
  exit 0
fi
echo "ensure-lrs: installing the test LRS (xapi-statements) into tests/lrs/node_modules..." >&2
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
installed
