#!/usr/bin/env bash
# Runs Sluice's whole test suite against real services:
#   installs apt packages (scripts/deps.sh all), starts Kafka/PostgreSQL/MariaDB
#   (scripts/services.sh up), exports their SLUICE_TEST_* addresses, then
#   `cargo test --workspace --locked "$@"`. The services stay up afterwards
#   (stop them with scripts/services.sh down).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# All apt packages in one go (one apt-get update at most); services.sh up then finds them.
"$ROOT/scripts/deps.sh" all
"$ROOT/scripts/services.sh" up
eval "$("$ROOT/scripts/services.sh" env)"

# rustup's cargo may not be on PATH in a non-login shell.
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "test.sh: cargo not found (install Rust with rustup)" >&2; exit 1; }

# Backtraces on panics, locally and in CI.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

echo "test.sh: SLUICE_TEST_KAFKA=$SLUICE_TEST_KAFKA SLUICE_TEST_POSTGRES=$SLUICE_TEST_POSTGRES SLUICE_TEST_MYSQL=$SLUICE_TEST_MYSQL"
exec cargo test --workspace --locked "$@"
