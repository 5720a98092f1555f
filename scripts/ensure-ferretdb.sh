#!/usr/bin/env bash
# Make sure a FerretDB 1.24 binary exists for the MongoDB store tests.
# Reuses $FERRETDB_BIN, `ferretdb` on PATH, or ~/go/bin/ferretdb; otherwise
# builds it with `go install` through the Go module proxy (a few minutes once).
# With STUDY_TIME_TEST_MONGODB_URL set, the tests use that server instead.
set -euo pipefail
VERSION=v1.24.2
if [ -n "${STUDY_TIME_TEST_MONGODB_URL:-}" ]; then
  exit 0
fi
if [ -n "${FERRETDB_BIN:-}" ] && [ -x "${FERRETDB_BIN}" ]; then
  exit 0
fi
gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
if command -v ferretdb >/dev/null 2>&1 || [ -x "$gobin/ferretdb" ]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "ensure-ferretdb: Go is not installed; the MongoDB store tests will be skipped (set STUDY_TIME_TEST_MONGODB_URL to use a MongoDB server)" >&2
  exit 0
fi
echo "ensure-ferretdb: building FerretDB $VERSION with go install (first time only, a few minutes)..." >&2
go install "github.com/FerretDB/FerretDB/cmd/ferretdb@$VERSION"
