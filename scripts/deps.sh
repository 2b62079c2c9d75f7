#!/usr/bin/env bash
# Installs the Debian packages Sluice needs, idempotently and quickly when they
# are already there (dpkg -s check first; `apt-get update` only when something
# is missing).
#
#   scripts/deps.sh services   # PostgreSQL, MariaDB, JDK + Maven (for Kafka)
#   scripts/deps.sh build      # C toolchain for rdkafka's bundled librdkafka
#   scripts/deps.sh browser    # headless Chromium + chromedriver (the web view's browser test)
#   scripts/deps.sh all        # all three (the default)
#
# Needs root (or passwordless sudo) only when something is missing.
set -euo pipefail

SERVICE_PKGS=(postgresql mariadb-server mariadb-client)
JAVA_PKGS=(openjdk-17-jdk-headless maven)
BUILD_PKGS=(build-essential cmake pkg-config libssl-dev libsasl2-dev zlib1g-dev
  libzstd-dev libcurl4-openssl-dev)
# The web view's real-browser test (crates/cli/tests/e2e_web.rs, in_a_real_browser) drives Debian's
# Chromium headless through its WebDriver.
BROWSER_PKGS=(chromium chromium-driver)

missing_pkgs() {
  local p
  for p in "$@"; do
    # "install ok installed" only: a removed-but-configured package doesn't count.
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
      printf '%s\n' "$p"
    fi
  done
}

apt_install() {
  local want=("$@") missing
  mapfile -t missing < <(missing_pkgs "${want[@]}")
  ((${#missing[@]} == 0)) && return 0
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  # apt's chatter goes to a file, shown only when something fails.
  local out
  out="$(mktemp)"
  # One update per run; package lists on a fresh machine are usually empty or stale.
  if [[ -z "${SLUICE_APT_UPDATED:-}" ]]; then
    "${sudo[@]}" apt-get -q update >"$out" 2>&1 || { cat "$out" >&2; rm -f "$out"; exit 1; }
    export SLUICE_APT_UPDATED=1
  fi
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    echo "deps: apt-get install ${missing[*]} failed" >&2
    exit 1
  fi
  rm -f "$out"
}

services_deps() {
  apt_install "${SERVICE_PKGS[@]}"
  # Kafka runs on the JVM (17+) and is fetched with Maven; keep an existing JDK.
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    apt_install "${JAVA_PKGS[@]}"
  fi
}

build_deps() {
  apt_install "${BUILD_PKGS[@]}"
}

browser_deps() {
  apt_install "${BROWSER_PKGS[@]}"
}

case "${1:-all}" in
  services) services_deps ;;
  build) build_deps ;;
  browser) browser_deps ;;
  all) services_deps; build_deps; browser_deps ;;
  *) echo "usage: $0 [services|build|browser|all]" >&2; exit 2 ;;
esac
