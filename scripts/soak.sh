#!/usr/bin/env bash
# The long soaks of the guarantees, too long for every commit: two processes on one
# pipeline (a realtime `sluice run` beside `run --once` and `replay`) for 200 rounds on the
# embedded log and on Kafka with PostgreSQL state, then the kill -9 tests, each checking
# 0 lost and 0 duplicated. Starts the services like scripts/test.sh.
#   scripts/soak.sh              # 200 rounds
#   scripts/soak.sh 50           # fewer
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${1:-200}"

"$ROOT/scripts/deps.sh" all
"$ROOT/scripts/services.sh" up
eval "$("$ROOT/scripts/services.sh" env)"
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

started=$(date +%s)
echo "soak.sh: $ROUNDS rounds of two processes on one pipeline"
SLUICE_E2E_ROUNDS="$ROUNDS" cargo test --locked -p sluice --test e2e_ownership \
  -- --test-threads 1 --nocapture a_realtime_run_beside
cargo test --locked -p sluice --test e2e_kill9 -- --test-threads 1
echo "soak.sh: passed in $(( $(date +%s) - started )) s"
