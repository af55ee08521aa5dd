#!/usr/bin/env bash
# Regenerates the Go code for proto/*.proto with the pinned protoc-gen-go.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || bash scripts/deps.sh protobuf-compiler
plugin=$(go tool -n protoc-gen-go)
protoc --plugin=protoc-gen-go="$plugin" -I proto \
  --go_out=. --go_opt=module=github.com/granary-db/granary proto/*.proto
