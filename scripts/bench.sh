#!/usr/bin/env bash
# End-to-end benchmark: Sluice beside the ceiling, a peer and a hand-written baseline, on the
# same data, in one run. Prints a markdown table of medians and writes it into
# docs/benchmarks.md (between the "scripts/bench.sh" markers). Asserts no time.
#
#   scripts/bench.sh                              everything, N = 1,000,000, 3 runs each
#   scripts/bench.sh --records 100000 --runs 1 --scenarios 2,4 --skip-memory
#
# Data: `sluice mock-api` serving N order records (~500 bytes of nested JSON each) in pages of
# 1,000, cursor pagination (GET /cursor/items). Target: a fresh PostgreSQL table, primary key id,
# made by bench/e2e/table.sql before each run (JSON in jsonb; dlt makes its own).
# Scenarios (medians of --runs runs each, interleaved so that a noisy minute hits them all):
#   1  Sluice: HTTP → Kafka → PostgreSQL upsert          (bench/e2e/sluice-kafka.yaml)
#   2  Sluice: HTTP → embedded buffer → PostgreSQL upsert (bench/e2e/sluice-embedded.yaml)
#   8  Sluice: HTTP → embedded buffer → PostgreSQL append (bench/e2e/sluice-embedded-append.yaml)
#      scenario 2 with `mode: append`, run right after it: the issue's targets against the
#      ceiling differ by mode (append ≥ 0.7×, upsert ≥ 0.5×), so both are measured
#   3  Sluice with no buffer: not run, the engine always has one (embedded by default)
#   4  ceiling: the same records pre-rendered as CSV, loaded by psql's \copy
#   5  peer: dlt's rest_api source, merge on id           (bench/e2e/dlt_peer.py)
#   6  hand-written: requests + confluent-kafka + psycopg COPY (bench/e2e/baseline.py)
#   7  catch-up: scenario 1 into a private PostgreSQL (its own cluster, pg_ctl, on port P+3)
#      that is stopped for --outage-down seconds (60) once 30% of --outage-records records
#      (1,000,000) are written; the backlog's drain rate beside the steady rate
#      (bench/e2e/sluice-kafka-outage.yaml, bench/e2e/outage.py). Not in the default set.
#   9  scenario 2 with PostgreSQL reached through a slow link: bench/e2e/latency_proxy.py on
#      127.0.0.1:P+4 delays each chunk --link-delay-ms (1) each way, as a database in another
#      rack or zone would (its round trips, not its bandwidth). Not in the default set.
# Scenarios 1, 2, 5 and 6 run a second time against a flaky API (--fault-scenarios): 2% of
# requests answered 429 with `Retry-After: 1`, and a burst of three 503s mid-way. 8 reads the
# API too but is not in the default set (its retries are scenario 2's): --fault-scenarios 1,2,8.
# Memory check: --memory-records (10,000,000) records through scenario 2, once: peak RSS
# beside scenario 2's at N.
#
# Flags: --records N  --runs K  --scenarios LIST (of 1-9; 1,2,8,3,4,5,6 by default)
#        --fault-scenarios LIST (of 1, 2, 5, 6, 8; 1,2,5,6 by default) or --no-faults
#        --memory-records N  --skip-memory  --no-docs (print, do not edit the docs)
#        --outage-records N  --outage-down S (scenario 7)  --link-delay-ms D (scenario 9)
#        --outage-pg-option NAME=VALUE (repeatable: a setting of scenario 7's private
#          PostgreSQL, e.g. wal_init_zero=off; its defaults are initdb's)
#        --port P (of the mock API; P and P+1 are used; P+2 and P+3 by scenario 7, P+4 by 9)
#        --timeout S (per run; 3600)
#        --bin PATH (a sluice binary built before: no cargo build)
#        --keep-tables (leave the bench_* schemas in place for a look; dropped by default)
#        --services-running (Kafka and PostgreSQL are up already, shared with others: do not
#          run `scripts/services.sh up`, only read their addresses)
#
# It installs what it needs: python3-venv when missing (apt), a virtualenv with the pinned
# Python packages of bench/e2e/requirements.txt in ~/.cache/sluice/bench-venv; starts Kafka
# and PostgreSQL (scripts/services.sh up kafka postgres, unless --services-running); builds
# `cargo build --release -p sluice` (honours CARGO_TARGET_DIR). Data, logs and raw results (JSON lines, one per run)
# go to ~/.cache/sluice/bench (SLUICE_BENCH_WORK). Writes only the bench_* schemas of the
# `sluice` database and Kafka topics named bench*.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E2E="$ROOT/bench/e2e"
CACHE="${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}"
VENV="${SLUICE_BENCH_VENV:-$CACHE/bench-venv}"
WORK="${SLUICE_BENCH_WORK:-$CACHE/bench}"

RECORDS=1000000
RUNS=3
SCENARIOS=1,2,8,3,4,5,6
FAULT_SCENARIOS=1,2,5,6
MEMORY_RECORDS=10000000
SKIP_MEMORY=0
WRITE_DOCS=1
PORT=18181
RUN_TIMEOUT=3600
BIN=""
KEEP_TABLES=0
OUTAGE_RECORDS=1000000
OUTAGE_DOWN=60
OUTAGE_PG_SETTINGS=""
LINK_DELAY_MS=1
SERVICES_UP=1

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

while (($#)); do
  case "$1" in
    --records) RECORDS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --scenarios) SCENARIOS="$2"; shift 2 ;;
    --fault-scenarios) FAULT_SCENARIOS="$2"; shift 2 ;;
    --no-faults) FAULT_SCENARIOS=""; shift ;;
    --memory-records) MEMORY_RECORDS="$2"; shift 2 ;;
    --skip-memory) SKIP_MEMORY=1; shift ;;
    --no-docs) WRITE_DOCS=0; shift ;;
    --port) PORT="$2"; shift 2 ;;
    --timeout) RUN_TIMEOUT="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --keep-tables) KEEP_TABLES=1; shift ;;
    --outage-records) OUTAGE_RECORDS="$2"; shift 2 ;;
    --outage-down) OUTAGE_DOWN="$2"; shift 2 ;;
    --outage-pg-option)
      [[ "${2:-}" =~ ^[a-z_]+=[A-Za-z0-9_.]+$ ]] || die "--outage-pg-option takes NAME=VALUE (a PostgreSQL setting)"
      OUTAGE_PG_SETTINGS+="${OUTAGE_PG_SETTINGS:+ }$2"; shift 2 ;;
    --link-delay-ms) LINK_DELAY_MS="$2"; shift 2 ;;
    --services-running) SERVICES_UP=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ "$RECORDS" =~ ^[1-9][0-9]*$ ]] || die "--records must be a positive number"
[[ "$MEMORY_RECORDS" =~ ^[1-9][0-9]*$ ]] || die "--memory-records must be a positive number"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
[[ "$OUTAGE_RECORDS" =~ ^[1-9][0-9]*$ ]] || die "--outage-records must be a positive number"
[[ "$OUTAGE_DOWN" =~ ^[1-9][0-9]*$ ]] || die "--outage-down must be a positive number of seconds"

has() { [[ ",$1," == *",$2,"* ]]; }
wants() { has "$SCENARIOS" "$1"; }
for s in ${SCENARIOS//,/ }; do [[ "$s" =~ ^[1-9]$ ]] || die "unknown scenario $s (1-9)"; done
# The fault variant only for the scenarios that run and read the API.
FAULTS=""
for s in ${FAULT_SCENARIOS//,/ }; do
  [[ "$s" =~ ^[12568]$ ]] || die "--fault-scenarios: only 1, 2, 5, 6, 8 read the API (got $s)"
  if wants "$s"; then FAULTS+="${FAULTS:+,}$s"; fi
done

# ---------------------------------------------------------------------------------------
# Setup: Python, services, the binary, the virtualenv.

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  log "installing python3-venv"
  sudo=(); ((EUID == 0)) || sudo=(sudo)
  "${sudo[@]}" apt-get -q update >/dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends \
    python3-venv >/dev/null
fi

if ((SERVICES_UP)); then
  log "services: kafka, postgres"
  bash "$ROOT/scripts/services.sh" up kafka postgres
fi
eval "$(bash "$ROOT/scripts/services.sh" env)"
PG_URL="$SLUICE_TEST_POSTGRES"
KAFKA="$SLUICE_TEST_KAFKA"
command -v psql >/dev/null || die "psql is missing (scripts/deps.sh services installs it)"

GIVEN_BIN=()
[[ -n "$BIN" ]] && GIVEN_BIN=(--given-bin)
if [[ -z "$BIN" ]]; then
  log "cargo build --release -p sluice"
  (cd "$ROOT" && cargo build --release -p sluice)
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  [[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
  BIN="$TARGET_DIR/release/sluice"
fi
[[ -x "$BIN" ]] || die "no sluice binary at $BIN"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

REQ_SUM="$(sha256sum "$E2E/requirements.txt" | cut -c1-16)"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "virtualenv $VENV"
  python3 -m venv "$VENV"
fi
if [[ "$(cat "$VENV/.bench-requirements" 2>/dev/null)" != "$REQ_SUM" ]]; then
  log "pip install -r bench/e2e/requirements.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$E2E/requirements.txt"
  echo "$REQ_SUM" >"$VENV/.bench-requirements"
fi
PY="$VENV/bin/python"
export RUNTIME__DLTHUB_TELEMETRY=false DLT_TELEMETRY_DISABLED=1

mkdir -p "$WORK"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$WORK/results-$STAMP.jsonl"
RUNDIR="$WORK/runs-$STAMP"
mkdir -p "$RUNDIR"
: >"$RESULTS"
log "results: $RESULTS"

# psql_q ARGS...: psql on the shared server (or on $PSQL_URL when set).
psql_q() { PGOPTIONS="-c client_min_messages=warning" psql "${PSQL_URL:-$PG_URL}" -X -q -v ON_ERROR_STOP=1 "$@"; }
fresh_schema() { psql_q -c "DROP SCHEMA IF EXISTS $1 CASCADE" -c "CREATE SCHEMA $1" >/dev/null; }
drop_schema() { psql_q -c "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null; }

# ---------------------------------------------------------------------------------------
# Scenario 7's PostgreSQL: a cluster of its own, since the scenario stops it (the shared
# server is never stopped). Made by initdb in a temp folder, trust authentication, on
# 127.0.0.1:P+3; removed on exit.

OUTAGE_PG_DIR=""
OUTAGE_PG_PORT=$((PORT + 3))
OUTAGE_PG_URL="postgres://postgres@127.0.0.1:$OUTAGE_PG_PORT/postgres"
outage_pg_setup() {
  local bindir as_pg=""
  bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -x "$bindir/initdb" ]] || die "scenario 7: no PostgreSQL server binaries under /usr/lib/postgresql"
  OUTAGE_PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-pg.XXXXXX")"
  # initdb and postgres refuse to run as root.
  if ((EUID == 0)); then
    chown postgres:postgres "$OUTAGE_PG_DIR"
    as_pg="runuser -u postgres -- "
  fi
  local ctl="$as_pg$bindir/pg_ctl -D $OUTAGE_PG_DIR/data" settings="" s
  for s in $OUTAGE_PG_SETTINGS; do settings+=" -c $s"; done
  OUTAGE_START="$ctl -w -t 60 -l $OUTAGE_PG_DIR/postgres.log -o '-p $OUTAGE_PG_PORT -k $OUTAGE_PG_DIR -c listen_addresses=127.0.0.1$settings' start"
  OUTAGE_STOP="$ctl -w -t 60 -m fast stop"
  eval "$as_pg$bindir/initdb -D $OUTAGE_PG_DIR/data -U postgres --auth=trust --encoding=UTF8 --locale=C" \
    >"$WORK/outage-initdb.log" 2>&1 || { cat "$WORK/outage-initdb.log" >&2; die "scenario 7: initdb failed"; }
  eval "$OUTAGE_START" >/dev/null || die "scenario 7: the private PostgreSQL did not start ($OUTAGE_PG_DIR/postgres.log)"
  log "scenario 7: private PostgreSQL on 127.0.0.1:$OUTAGE_PG_PORT ($OUTAGE_PG_DIR)${OUTAGE_PG_SETTINGS:+, settings: $OUTAGE_PG_SETTINGS}"
}
outage_pg_remove() {
  [[ -n "$OUTAGE_PG_DIR" ]] || return 0
  eval "${OUTAGE_STOP/-m fast/-m immediate}" >/dev/null 2>&1 || true
  rm -rf "$OUTAGE_PG_DIR"
  OUTAGE_PG_DIR=""
}

# ---------------------------------------------------------------------------------------
# The mock API.

MOCK_PIDS=()
LINK_PID=""
cleanup() {
  local p
  for p in "${MOCK_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -z "$LINK_PID" ]] || kill "$LINK_PID" 2>/dev/null || true
  outage_pg_remove
}
trap cleanup EXIT

# start_mock PORT LOG ARGS...: starts `sluice mock-api` and waits until it answers
# (fails, saying why, when it does not).
start_mock() {
  local port="$1" logf="$2" i
  shift 2
  "$BIN" mock-api --port "$port" "$@" >"$logf" 2>&1 &
  MOCK_PID=$!
  MOCK_PIDS+=("$MOCK_PID")
  for ((i = 0; i < 2400; i++)); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/cursor/items?limit=1"; then return 0; fi
    kill -0 "$MOCK_PID" 2>/dev/null || { cat "$logf" >&2; log "the mock API did not start"; return 1; }
    sleep 0.25
  done
  log "the mock API did not answer within 600 s"
  stop_mock
  return 1
}
stop_mock() {
  kill "$MOCK_PID" 2>/dev/null || true
  wait "$MOCK_PID" 2>/dev/null || true
}

# The fault mix: every 50th data request (2%) gets 429 with Retry-After: 1, and three 503s in a
# row half-way. Requests are numbered by arrival, retries included, so a mock serves one run.
FAULT_CONFIG="$WORK/faults-$RECORDS.json"
python3 - "$RECORDS" >"$FAULT_CONFIG" <<'EOF'
import json, sys
records = int(sys.argv[1])
pages = -(-records // 1000)
faults = [{"from_request": r, "times": 1,
           "kind": {"type": "rate_limited", "retry_after": {"seconds": 1}}}
          for r in range(25, pages + 1, 50)]
faults.append({"from_request": pages // 2 + 3, "times": 3,
               "kind": {"type": "server_error", "status": 503}})
faults.sort(key=lambda f: f["from_request"])
print(json.dumps({"records": records, "page_size": 1000, "faults": faults}))
EOF

BASE_PORT="$PORT"
FAULT_PORT=$((PORT + 1))
log "mock API: $RECORDS records on 127.0.0.1:$BASE_PORT"
start_mock "$BASE_PORT" "$WORK/mock-$STAMP.log" --records "$RECORDS" --page-size 1000 ||
  die "cannot start the mock API"
BASE_MOCK_PID="$MOCK_PID"
API="http://127.0.0.1:$BASE_PORT"

# The source's truth (row count and checksum) and the pre-rendered records of the ceiling.
SOURCE_CSV="$WORK/source-$RECORDS.csv"
SOURCE_JSON="$WORK/source-$RECORDS.json"
if [[ ! -s "$SOURCE_JSON" || ! -s "$SOURCE_CSV" ]]; then
  log "fetching the $RECORDS records once (the ceiling's CSV and the source checksum)"
  "$PY" "$E2E/fetch.py" "$API" "$SOURCE_CSV" "$SOURCE_JSON" >&2
fi
SOURCE_ROWS="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["rows"])' "$SOURCE_JSON")"
SOURCE_SUM="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["checksum"])' "$SOURCE_JSON")"
((SOURCE_ROWS == RECORDS)) || die "the mock served $SOURCE_ROWS records, not $RECORDS"

# ---------------------------------------------------------------------------------------
# One run of one scenario.

# record SCENARIO VARIANT RUN RECORDS DIR TABLE [SLUICE]: checks the table, appends a line.
record() {
  local scenario="$1" variant="$2" run="$3" records="$4" dir="$5" table="$6" sluice="${7:-}"
  local check rows sum rc want="$SOURCE_SUM"
  if [[ "$variant" == memory || "$variant" == outage ]]; then
    # Another data set than the source's: the row count only.
    want=""
    check="$(psql_q -A -t -c "SELECT count(*) || '|' FROM $table" 2>"$dir/check.err" || echo "0|")"
  else
    check="$(psql_q -A -t -v table="$table" -f "$E2E/checksum.sql" 2>"$dir/check.err" || echo "0|")"
  fi
  rows="${check%%|*}"
  sum="${check#*|}"
  rc="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["rc"])' "$dir/measure.json")"
  "$PY" - "$dir/measure.json" "$scenario" "$variant" "$run" "$records" "$rows" "$sum" \
    "$want" "$sluice" "$dir/measure.json.stdout" >>"$RESULTS" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
scenario, variant, run, records, rows, got, want, sluice, out = sys.argv[2:11]
m.update(scenario=int(scenario), variant=variant, run=int(run), records=int(records),
         rows=int(rows or 0), checksum_ok=(got == want) if want else None)
import os
outage = os.path.join(os.path.dirname(sys.argv[1]), "outage.json")
if os.path.exists(outage):
    m["outage"] = json.load(open(outage))
if sluice and m["rc"] == 0:
    try:
        summary = json.load(open(out))
        m["status"] = summary.get("status")
        m["nodes"] = summary.get("nodes")
    except Exception as e:  # the summary is informative only
        m["summary_error"] = str(e)
print(json.dumps(m))
EOF
  local ok="checksum ok"
  [[ "$sum" == "$SOURCE_SUM" ]] || ok="CHECKSUM MISMATCH"
  [[ "$variant" == memory || "$variant" == outage ]] && ok="(row count only)"
  log "  scenario $scenario $variant run $run: rc $rc, $rows rows, $ok ($(cut -c1-200 "$dir/measure.json"))"
  if [[ "$rc" != 0 ]]; then
    log "  stderr tail of the failed run ($dir/measure.json.stderr):"
    tail -n 15 "$dir/measure.json.stderr" >&2 || true
  fi
}

measure() { local out="$1"; shift; python3 "$E2E/measure.py" --out "$out" --timeout "$RUN_TIMEOUT" -- "$@" || true; }

# run_scenario SCENARIO VARIANT RUN API RECORDS
run_scenario() {
  local s="$1" variant="$2" run="$3" api="$4" records="$5"
  local dir="$RUNDIR/s$s-$variant-$run"
  mkdir -p "$dir"
  case "$s" in
    1)
      fresh_schema bench_s1
      psql_q -v table=bench_s1.orders -f "$E2E/table.sql" >/dev/null
      (cd "$dir" && BENCH_API="$api" BENCH_PG="$PG_URL" BENCH_TABLE=bench_s1.orders \
        BENCH_KAFKA="$KAFKA" BENCH_TOPIC_PREFIX="bench$STAMP-$variant-$run" \
        measure "$dir/measure.json" "$BIN" run --once --json "$E2E/sluice-kafka.yaml")
      record 1 "$variant" "$run" "$records" "$dir" bench_s1.orders sluice
      "$PY" "$E2E/kafka_topics.py" "$KAFKA" delete "bench$STAMP-$variant-$run." >/dev/null 2>&1 || true
      ;;
    2 | 9)
      # 9 is 2 with the database reached through the slow link.
      local schema="bench_s$s" pg="$PG_URL"
      [[ "$s" == 9 ]] && pg="$LINK_PG_URL"
      [[ "$variant" == memory ]] && schema=bench_mem
      fresh_schema "$schema"
      psql_q -v table="$schema.orders" -f "$E2E/table.sql" >/dev/null
      (cd "$dir" && BENCH_API="$api" BENCH_PG="$pg" BENCH_TABLE="$schema.orders" \
        measure "$dir/measure.json" "$BIN" run --once --json "$E2E/sluice-embedded.yaml")
      record "$s" "$variant" "$run" "$records" "$dir" "$schema.orders" sluice
      rm -rf "$dir/.sluice/buffer"
      ;;
    8)
      # The same table as the others (primary key id): append writes each id once, so the key
      # costs what it costs the ceiling, and a record written twice fails the run.
      fresh_schema bench_s8
      psql_q -v table=bench_s8.orders -f "$E2E/table.sql" >/dev/null
      (cd "$dir" && BENCH_API="$api" BENCH_PG="$PG_URL" BENCH_TABLE=bench_s8.orders \
        measure "$dir/measure.json" "$BIN" run --once --json "$E2E/sluice-embedded-append.yaml")
      record 8 "$variant" "$run" "$records" "$dir" bench_s8.orders sluice
      rm -rf "$dir/.sluice/buffer"
      ;;
    4)
      fresh_schema bench_ceiling
      psql_q -v table=bench_ceiling.orders -f "$E2E/table.sql" >/dev/null
      measure "$dir/measure.json" psql "$PG_URL" -X -q -v ON_ERROR_STOP=1 \
        -c "\\copy bench_ceiling.orders FROM '$SOURCE_CSV' WITH (FORMAT csv)"
      record 4 "$variant" "$run" "$records" "$dir" bench_ceiling.orders
      ;;
    5)
      drop_schema bench_dlt
      drop_schema bench_dlt_staging
      measure "$dir/measure.json" "$PY" "$E2E/dlt_peer.py" "$api" "$PG_URL" bench_dlt "$dir/dlt"
      record 5 "$variant" "$run" "$records" "$dir" bench_dlt.orders
      rm -rf "$dir/dlt"
      ;;
    6)
      fresh_schema bench_baseline
      psql_q -v table=bench_baseline.orders -f "$E2E/table.sql" >/dev/null
      local topic="bench$STAMP-baseline-$variant-$run"
      measure "$dir/measure.json" "$PY" "$E2E/baseline.py" "$api" "$PG_URL" \
        bench_baseline.orders "$topic" "$KAFKA"
      record 6 "$variant" "$run" "$records" "$dir" bench_baseline.orders
      "$PY" "$E2E/kafka_topics.py" "$KAFKA" delete "$topic" >/dev/null 2>&1 || true
      ;;
    7)
      local prefix="bench$STAMP-outage-$run" mpid
      PSQL_URL="$OUTAGE_PG_URL" fresh_schema bench_outage
      PSQL_URL="$OUTAGE_PG_URL" psql_q -v table=bench_outage.orders -f "$E2E/table.sql" >/dev/null
      (cd "$dir" && BENCH_API="$api" BENCH_PG="$OUTAGE_PG_URL" BENCH_TABLE=bench_outage.orders \
        BENCH_KAFKA="$KAFKA" BENCH_TOPIC_PREFIX="$prefix" \
        measure "$dir/measure.json" "$BIN" run --once --json "$E2E/sluice-kafka-outage.yaml") &
      mpid=$!
      "$PY" "$E2E/outage.py" --pg "$OUTAGE_PG_URL" --records "$records" --at 0.3 \
        --down "$OUTAGE_DOWN" --pid "$mpid" --out "$dir/outage.json" --stop "$OUTAGE_STOP" \
        --start "$OUTAGE_START" --kafka "$KAFKA" --topic-prefix "$prefix." \
        --pg-settings "$OUTAGE_PG_SETTINGS" ||
        log "  scenario 7: the outage watch failed"
      wait "$mpid" || true
      # The server is up again whatever the watch came to.
      eval "$OUTAGE_START" >/dev/null 2>&1 || true
      PSQL_URL="$OUTAGE_PG_URL" record 7 "$variant" "$run" "$records" "$dir" bench_outage.orders sluice
      "$PY" "$E2E/kafka_topics.py" "$KAFKA" delete "$prefix." >/dev/null 2>&1 || true
      ;;
  esac
}

# ---------------------------------------------------------------------------------------
# The runs: run 1 of every scenario, then run 2, ...

if wants 7; then
  outage_pg_setup
  OUTAGE_PORT=$((PORT + 2))
  log "scenario 7: mock API with $OUTAGE_RECORDS records on 127.0.0.1:$OUTAGE_PORT"
  start_mock "$OUTAGE_PORT" "$RUNDIR/mock-outage.log" --records "$OUTAGE_RECORDS" --page-size 1000 ||
    die "cannot start scenario 7's mock API"
  OUTAGE_MOCK_PID="$MOCK_PID"
fi

if wants 9; then
  # The shared PostgreSQL, reached through the proxy: the same server, a slower link.
  LINK_PORT=$((PORT + 4))
  python3 "$E2E/latency_proxy.py" --listen "127.0.0.1:$LINK_PORT" \
    --to "$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(f"{p.hostname}:{p.port or 5432}")' "$PG_URL")" \
    --delay-ms "$LINK_DELAY_MS" >"$RUNDIR/latency-proxy.log" 2>&1 &
  LINK_PID=$!
  LINK_PG_URL="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); n = p.netloc.rsplit("@", 1); print(u.urlunsplit(p._replace(netloc=(n[0] + "@" if len(n) > 1 else "") + "127.0.0.1:" + sys.argv[2])))' "$PG_URL" "$LINK_PORT")"
  for ((i = 0; i < 40; i++)); do
    psql "$LINK_PG_URL" -X -q -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.25
  done
  log "scenario 9: PostgreSQL through a link of $LINK_DELAY_MS ms each way (127.0.0.1:$LINK_PORT)"
fi

for ((run = 1; run <= RUNS; run++)); do
  # 8 and 9 beside 2: the same pipeline but for the mode or the link, so they meet the same
  # minutes' load.
  for s in 1 2 8 9 4 5 6; do
    wants "$s" || continue
    log "scenario $s, run $run/$RUNS"
    run_scenario "$s" none "$run" "$API" "$RECORDS"
  done
  for s in ${FAULTS//,/ }; do
    log "scenario $s (flaky API), run $run/$RUNS"
    # A fresh mock per run: the faults are numbered from its first request.
    if start_mock "$FAULT_PORT" "$RUNDIR/mock-faults-s$s-$run.log" --config "$FAULT_CONFIG" \
      --records "$RECORDS"; then
      run_scenario "$s" faults "$run" "http://127.0.0.1:$FAULT_PORT" "$RECORDS"
      stop_mock
    fi
  done
  if wants 7; then
    log "scenario 7 (PostgreSQL stopped for $OUTAGE_DOWN s mid-run), run $run/$RUNS"
    run_scenario 7 outage "$run" "http://127.0.0.1:$OUTAGE_PORT" "$OUTAGE_RECORDS"
  fi
done
MOCK_PID="$BASE_MOCK_PID"
stop_mock
if wants 7; then
  MOCK_PID="$OUTAGE_MOCK_PID"
  stop_mock
  outage_pg_remove
fi

if ((SKIP_MEMORY == 0)); then
  log "memory check: $MEMORY_RECORDS records through scenario 2"
  if start_mock "$FAULT_PORT" "$RUNDIR/mock-memory.log" --records "$MEMORY_RECORDS" \
    --page-size 1000; then
    run_scenario 2 memory 1 "http://127.0.0.1:$FAULT_PORT" "$MEMORY_RECORDS"
    stop_mock
  fi
  drop_schema bench_mem
fi

# ---------------------------------------------------------------------------------------
# The report.

REPORT="$WORK/report-$STAMP.md"
"$PY" "$E2E/report.py" --results "$RESULTS" --root "$ROOT" --bin "$BIN" "${GIVEN_BIN[@]}" --pg "$PG_URL" \
  --records "$RECORDS" --runs "$RUNS" --scenarios "$SCENARIOS" --faults "$FAULTS" \
  --fault-config "$FAULT_CONFIG" --link-delay-ms "$LINK_DELAY_MS" >"$REPORT"
cat "$REPORT"
if ((WRITE_DOCS)); then
  "$PY" "$E2E/report.py" --insert "$REPORT" "$ROOT/docs/benchmarks.md"
  log "docs/benchmarks.md updated"
fi
if ((KEEP_TABLES == 0)); then
  for schema in bench_s1 bench_s2 bench_s8 bench_s9 bench_ceiling bench_dlt bench_dlt_staging bench_baseline; do
    drop_schema "$schema"
  done
fi
log "raw results: $RESULTS; report: $REPORT"
