#!/usr/bin/env bash
# Proxy benchmark (issue 3, "Performance"): Granary's proxy vs twemproxy vs
# direct Redis, with redis-benchmark, in interleaved rounds; results go in
# docs/benchmarks.md.
# Usage: scripts/bench-proxy.sh [benchproxy flags]   e.g. --rounds 5 --seconds 3
# Installs redis-server, redis-tools and nutcracker when missing, builds
# bin/granary, then runs `go run ./e2e/benchproxy` with the given flags.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh redis-server redis-tools nutcracker
GO=${GO:-go}
$GO build -o bin/granary ./cmd/granary
exec $GO run ./e2e/benchproxy --bin bin/granary "$@"
