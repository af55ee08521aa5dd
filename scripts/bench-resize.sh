#!/usr/bin/env bash
# Resize benchmark (issue 4, "Resize"): a 64M db filled to 50 MB grows to
# 256M under 2,000 confirmed writes/s; copy throughput next to a plain
# SCAN + MIGRATE loop, write stall, errors, lost writes. Results go in
# docs/benchmarks.md.
# Usage: scripts/bench-resize.sh [benchresize flags]   e.g. --fill-mb 50 --rate 2000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh redis-server redis-tools
GO=${GO:-go}
$GO build -o bin/granary ./cmd/granary
exec $GO run ./e2e/benchresize --bin bin/granary "$@"
