#!/usr/bin/env bash
# Failover benchmark (issue 4, "Failover"): SIGKILL a pair's master 20 times
# while 4 clients do confirmed writes, under Granary and then under Redis
# Sentinel on the same kind of pair; prints write unavailability per kill,
# lost acknowledged writes and whether a spare became the new replica.
# Results go in docs/benchmarks.md, "Failover".
# With --stop (issue 13, item 2) the master hangs (SIGSTOP) instead, is
# resumed after the failover and must refuse writes.
# Usage: scripts/bench-failover.sh [benchfailover flags]   e.g. --rounds 5, --stop
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh redis-server redis-sentinel
GO=${GO:-go}
$GO build -o bin/granary ./cmd/granary
exec $GO run ./e2e/benchfailover --bin bin/granary "$@"
