#!/usr/bin/env bash
# HTTP source benchmarks: JSON → Arrow throughput per core, and requests/s and records/s
# of the source against the mock API. Prints medians of SLUICE_BENCH_RUNS runs (5).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p sluice-connectors --bench http_json_to_arrow "$@"
