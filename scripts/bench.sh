#!/bin/sh
# Runs idend's Go benchmarks and prints their figures. Kernel benchmarks
# need root; see docs/BENCHMARKS.md for method and targets.
set -eu
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem -count 1 ./internal/... | grep -E '^(Benchmark|ok|FAIL|goos|cpu)'
