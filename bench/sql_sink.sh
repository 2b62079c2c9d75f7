#!/usr/bin/env bash
# SQL sink benchmark: rows/s into PostgreSQL (append, upsert) beside a plain binary COPY of
# the same rows (the ceiling), and into MariaDB beside plain multi-row INSERTs, measured in
# the same run. Prints a markdown table of medians of SLUICE_BENCH_RUNS runs (3) and ratios.
#   bench/sql_sink.sh            both databases
#   bench/sql_sink.sh postgres   one of them
# Sizes: SLUICE_BENCH_ROWS (200000), SLUICE_BENCH_BATCH (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/services.sh env)"
bash scripts/services.sh status >/dev/null || { echo "sql_sink.sh: start the services first: scripts/services.sh up" >&2; exit 1; }
exec cargo bench -p sluice-connectors --bench sql_sink -- "$@"
