#!/usr/bin/env bash
# Starts and stops the services Sluice's tests talk to, all bound to 127.0.0.1:
#   kafka     127.0.0.1:9092  single-node KRaft broker+controller (controller on :9093),
#                             jars from Maven Central via scripts/kafka/pom.xml
#   postgres  127.0.0.1:5432  private cluster from Debian's postgresql, role/db sluice/sluice
#   mariadb   127.0.0.1:3306  private datadir from Debian's mariadb-server, user/db sluice/sluice
#
#   scripts/services.sh up       install what is missing, start what is not running, wait until ready
#   scripts/services.sh down     stop what `up` started
#   scripts/services.sh up|down kafka|postgres|mariadb ...   only the services named
#   scripts/services.sh status   one line per service; exit 0 only if all are up
#   scripts/services.sh env      `export SLUICE_TEST_...=` lines: eval "$(scripts/services.sh env)"
#   scripts/services.sh kafka-tool CLASS ARGS...   run a Kafka CLI class, e.g.
#       org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 --list
#       org.apache.kafka.tools.ConsoleProducer / org.apache.kafka.tools.consumer.ConsoleConsumer
#
# Data and logs live in .services/ (git-ignored); Kafka's jars are cached in
# ${SLUICE_CACHE:-~/.cache/sluice} so a fresh clone starts fast. `up` is idempotent.
# SLUICE_SERVICES_MODE=auto|local|docker: auto uses `docker compose` (docker-compose.yml)
# when a Docker engine answers, else runs the services locally (the usual case here).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SVC="${SLUICE_SERVICES_DIR:-$ROOT/.services}"
CACHE="${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}"
HOST=127.0.0.1
KAFKA_PORT="${SLUICE_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${SLUICE_KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${SLUICE_PG_PORT:-5432}"
MY_PORT="${SLUICE_MYSQL_PORT:-3306}"
START_TIMEOUT="${SLUICE_SERVICES_TIMEOUT:-120}"

log() { printf '%s\n' "$*" >&2; }
die() { log "services: $*"; exit 1; }

# Path relative to the repo root when it is inside it (for messages).
rel() { local p="$1"; [[ "$p" == "$ROOT/"* ]] && p="${p#"$ROOT/"}"; printf '%s' "$p"; }

# A short, stable id of this checkout: keeps socket paths and fallback dirs apart.
checkout_id() { printf '%s' "$SVC" | sha256sum | cut -c1-10; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

pid_alive() { [[ -s "$1" ]] && kill -0 "$(<"$1")" 2>/dev/null; }

# start_failed NAME LOGFILE: the one way a service reports that it did not come up.
start_failed() {
  local name="$1" logfile="$2"
  log "$name failed to start; read $(rel "$logfile")"
  if [[ -f "$logfile" ]]; then
    log "---- last lines of $(rel "$logfile") ----"
    # Java stack frames say little here; keep the messages and "Caused by" lines.
    grep -vE $'^\t+at |^\t*\\.\\.\\. [0-9]+ more' "$logfile" | tail -n 30 >&2 || true
    log "----"
  fi
  exit 1
}

# Run as the postgres OS user when we are root (initdb and postgres refuse root).
as_pg() {
  # cd /: the postgres user may not be allowed into the current directory.
  # 9>&-: the server pg_ctl starts must not inherit (and so hold) our lock.
  if ((EUID == 0)); then (cd / && runuser -u postgres -- "$@" 9>&-); else "$@" 9>&-; fi
}

# Stop a Debian-started server that holds one of our ports (apt may auto-start it).
stop_distro_service() {
  local unit="$1"
  log "services: stopping the distribution's $unit service, which holds its port"
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  else
    service "$unit" stop >/dev/null 2>&1 || true
    if command -v update-rc.d >/dev/null; then update-rc.d "$unit" disable >/dev/null 2>&1 || true; fi
  fi
}

wait_port_free() {
  local port="$1" i
  for ((i = 0; i < 30; i++)); do port_open "$HOST" "$port" || return 0; sleep 1; done
  return 1
}

# ---------------------------------------------------------------- kafka ----
KAFKA_POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_DIR="$SVC/kafka"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_PID="$KAFKA_DIR/kafka.pid"

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then printf '%s' "$JAVA_HOME/bin/java"; else printf 'java'; fi
}

kafka_libs() {
  local version hash
  version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")"
  hash="$(sha256sum "$KAFKA_POM" | cut -c1-8)"
  printf '%s' "$CACHE/kafka-$version-$hash/libs"
}

ensure_kafka_libs() {
  local libs dest tmp
  libs="$(kafka_libs)"
  dest="$(dirname "$libs")"
  [[ -f "$dest/.complete" ]] && return 0
  log "services: fetching Kafka jars into $dest (once)"
  mkdir -p "$CACHE"
  tmp="$(mktemp -d "$CACHE/.kafka-download.XXXXXX")"
  if ! mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1; then
    cat "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    die "kafka: could not fetch jars with Maven (scripts/kafka/pom.xml)"
  fi
  rm -rf "$dest"
  touch "$tmp/.complete"
  mv "$tmp" "$dest"
}

write_kafka_config() {
  mkdir -p "$KAFKA_DIR/data"
  sed -e "s|@LOG_DIRS@|$KAFKA_DIR/data|" -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    "$ROOT/scripts/kafka/server.properties" >"$KAFKA_DIR/server.properties"
  # Broker: everything on stdout, which goes to kafka.log.
  cat >"$KAFKA_DIR/log4j2.properties" <<'EOF'
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.zk.name = org.apache.kafka.clients.NetworkClient
logger.zk.level = WARN
EOF
  # Command-line tools: warnings only, on stderr.
  cat >"$KAFKA_DIR/tools-log4j2.properties" <<'EOF'
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
EOF
}

# kafka_tool CLASS ARGS...: run a Kafka command-line tool (e.g. org.apache.kafka.tools.TopicCommand).
kafka_tool() {
  "$(java_bin)" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
    -cp "$(kafka_libs)/*" "$@"
}

kafka_list_topics() {
  timeout 60 "$(java_bin)" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
    -cp "$(kafka_libs)/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$HOST:$KAFKA_PORT" --list
}

kafka_up() {
  if pid_alive "$KAFKA_PID" && port_open "$HOST" "$KAFKA_PORT"; then
    log "kafka     already up   $HOST:$KAFKA_PORT"
    return 0
  fi
  mkdir -p "$KAFKA_DIR"
  ensure_kafka_libs
  write_kafka_config
  if pid_alive "$KAFKA_PID"; then
    log "services: kafka is starting already (pid $(<"$KAFKA_PID")); waiting"
  elif port_open "$HOST" "$KAFKA_PORT"; then
    if kafka_list_topics >/dev/null 2>&1; then
      log "kafka     up (not started by services.sh; reusing)   $HOST:$KAFKA_PORT"
      return 0
    fi
    die "kafka: port $KAFKA_PORT is taken by another program (see: ss -ltnp)"
  else
    command -v "$(java_bin)" >/dev/null || die "kafka: no java (JDK 17+) on PATH"
    [[ -f "$KAFKA_LOG" ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.1"
    if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
      # Random cluster id: 16 bytes, URL-safe base64 without padding (Kafka's Uuid format).
      # One in 64 starts with '-': given as `--cluster-id=ID`, never as an option of its own.
      local cluster_id
      cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
      if ! kafka_tool kafka.tools.StorageTool format --cluster-id="$cluster_id" \
        -c "$KAFKA_DIR/server.properties" --ignore-formatted >>"$KAFKA_LOG" 2>&1; then
        start_failed kafka "$KAFKA_LOG"
      fi
    fi
    (
      cd "$KAFKA_DIR"
      # setsid: own session, so the broker outlives the shell that started it.
      exec setsid "$(java_bin)" -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
        -cp "$(kafka_libs)/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
        >>"$KAFKA_LOG" 2>&1 </dev/null 9>&-
    ) &
    echo "$!" >"$KAFKA_PID"
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  until port_open "$HOST" "$KAFKA_PORT"; do
    pid_alive "$KAFKA_PID" || start_failed kafka "$KAFKA_LOG"
    ((SECONDS < deadline)) || start_failed kafka "$KAFKA_LOG"
    sleep 0.5
  done
  # The port opens before the broker has joined its own quorum: ask it for metadata.
  until kafka_list_topics >/dev/null 2>>"$KAFKA_DIR/tools.log"; do
    pid_alive "$KAFKA_PID" || start_failed kafka "$KAFKA_LOG"
    ((SECONDS < deadline)) || start_failed kafka "$KAFKA_LOG"
    sleep 1
  done
  log "kafka     up   $HOST:$KAFKA_PORT"
}

kafka_down() {
  if ! pid_alive "$KAFKA_PID"; then rm -f "$KAFKA_PID"; return 0; fi
  local pid i
  pid="$(<"$KAFKA_PID")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "services: kafka did not stop in 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$KAFKA_PID"
  log "kafka     stopped"
}

# ------------------------------------------------------------- postgres ----
pg_bindir() {
  local d
  d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$d" && -x "$d/initdb" ]] || return 1
  printf '%s' "$d"
}

# Where the cluster lives: .services/postgres, unless the postgres OS user cannot
# reach it (e.g. a clone under /root, mode 700); then a dir under
# /var/lib/postgresql that .services/postgres links to.
pg_home() {
  local d="$SVC/postgres" alt
  if [[ -L "$d" ]]; then readlink -f "$d"; return 0; fi
  mkdir -p "$d"
  if ((EUID != 0)); then printf '%s' "$d"; return 0; fi
  chown postgres:postgres "$d"
  if runuser -u postgres -- test -w "$d" -a -x "$d"; then printf '%s' "$d"; return 0; fi
  alt="/var/lib/postgresql/sluice-$(checkout_id)"
  mkdir -p "$alt"
  chown postgres:postgres "$alt"
  rmdir "$d" 2>/dev/null || mv "$d" "$d.unreachable.$$"
  ln -s "$alt" "$d"
  log "services: postgres data in $alt (the postgres user cannot reach $d)"
  printf '%s' "$alt"
}

pg_sockdir() {
  local d="$1/run"
  ((${#d} > 80)) && d="/tmp/sluice-pg-$(checkout_id)"
  printf '%s' "$d"
}

pg_running() {
  local bin="$1" home="$2"
  [[ -f "$home/data/PG_VERSION" ]] || return 1
  as_pg "$bin/pg_ctl" -D "$home/data" status >/dev/null 2>&1
}

pg_sluice_answers() {
  PGCONNECT_TIMEOUT=3 psql "postgres://sluice:sluice@$HOST:$PG_PORT/sluice" -qAtc 'select 1' >/dev/null 2>&1
}

pg_up() {
  local bin home data sock logfile
  bin="$(pg_bindir)" || die "postgres: no PostgreSQL server under /usr/lib/postgresql (scripts/deps.sh services)"
  home="$(pg_home)"
  data="$home/data"
  sock="$(pg_sockdir "$home")"
  logfile="$home/postgres.log"
  if pg_running "$bin" "$home" && port_open "$HOST" "$PG_PORT"; then
    log "postgres  already up   $HOST:$PG_PORT"
    return 0
  fi
  if ! pg_running "$bin" "$home" && port_open "$HOST" "$PG_PORT"; then
    if pg_sluice_answers; then
      log "postgres  up (not started by services.sh; reusing)   $HOST:$PG_PORT"
      return 0
    fi
    # Debian's own cluster (apt starts it where services may start) holds the port.
    if command -v pg_lsclusters >/dev/null; then
      local ver name port status
      while read -r ver name port status _; do
        if [[ "$port" == "$PG_PORT" && "$status" == online* ]]; then
          log "services: stopping Debian's PostgreSQL cluster $ver/$name, which holds port $PG_PORT"
          pg_ctlcluster "$ver" "$name" stop || true
          # Keep it from coming back at boot.
          [[ -w "/etc/postgresql/$ver/$name/start.conf" ]] && echo manual >"/etc/postgresql/$ver/$name/start.conf"
        fi
      done < <(pg_lsclusters -h 2>/dev/null)
    fi
    wait_port_free "$PG_PORT" || die "postgres: port $PG_PORT is taken by another program (see: ss -ltnp)"
  fi
  if [[ ! -f "$data/PG_VERSION" ]]; then
    rm -rf "$data"
    if ! as_pg "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C --no-sync >"$home/initdb.log" 2>&1; then
      start_failed postgres "$home/initdb.log"
    fi
    echo "include_if_exists = 'sluice.conf'" >>"$data/postgresql.conf"
  fi
  mkdir -p "$sock"
  ((EUID == 0)) && chown postgres:postgres "$sock"
  # Rewritten on every start so that changes here apply to old clusters too.
  # Durability is off: this is a throwaway test database.
  cat >"$data/sluice.conf" <<EOF
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$sock'
max_connections = 200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  ((EUID == 0)) && chown postgres:postgres "$data/sluice.conf"
  if ! pg_running "$bin" "$home"; then
    if ! as_pg "$bin/pg_ctl" -D "$data" -l "$logfile" -w -t "$START_TIMEOUT" start >/dev/null 2>&1; then
      start_failed postgres "$logfile"
    fi
  fi
  # Role and database: idempotent, and cheap enough to check on every start.
  if ! as_pg "$bin/psql" -h "$sock" -p "$PG_PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
    >>"$logfile" 2>&1 <<'SQL'
SELECT 'CREATE ROLE sluice LOGIN SUPERUSER'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sluice') \gexec
ALTER ROLE sluice WITH LOGIN SUPERUSER REPLICATION PASSWORD 'sluice';
SELECT 'CREATE DATABASE sluice OWNER sluice'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'sluice') \gexec
SQL
  then
    start_failed postgres "$logfile"
  fi
  log "postgres  up   $HOST:$PG_PORT"
}

pg_down() {
  local bin home
  bin="$(pg_bindir)" || return 0
  [[ -e "$SVC/postgres" ]] || return 0
  home="$(pg_home)"
  pg_running "$bin" "$home" || return 0
  as_pg "$bin/pg_ctl" -D "$home/data" -m fast -w -t 60 stop >/dev/null
  log "postgres  stopped"
}

# -------------------------------------------------------------- mariadb ----
MY_DIR="$SVC/mariadb"
MY_DATA="$MY_DIR/data"
MY_LOG="$MY_DIR/mariadb.log"
MY_PID="$MY_DIR/mariadb.pid"

my_sock() {
  local s="$MY_DIR/run/mariadb.sock"
  ((${#s} > 90)) && s="/tmp/sluice-mariadb-$(checkout_id).sock"
  printf '%s' "$s"
}

# Client as the server's admin: root over the socket (unix_socket auth).
my_admin_sql() { mariadb --no-defaults --socket="$(my_sock)" -uroot "$@"; }

my_sluice_answers() {
  mariadb --no-defaults --connect-timeout=3 -h"$HOST" -P"$MY_PORT" -usluice -psluice sluice \
    -e 'select 1' >/dev/null 2>&1
}

my_up() {
  command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] ||
    die "mariadb: no mariadbd (scripts/deps.sh services)"
  local mariadbd sock user
  mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
  sock="$(my_sock)"
  user="$(id -un)"
  if pid_alive "$MY_PID" && port_open "$HOST" "$MY_PORT"; then
    log "mariadb   already up   $HOST:$MY_PORT"
    return 0
  fi
  if ! pid_alive "$MY_PID" && port_open "$HOST" "$MY_PORT"; then
    if my_sluice_answers; then
      log "mariadb   up (not started by services.sh; reusing)   $HOST:$MY_PORT"
      return 0
    fi
    stop_distro_service mariadb
    wait_port_free "$MY_PORT" || die "mariadb: port $MY_PORT is taken by another program (see: ss -ltnp)"
  fi
  mkdir -p "$MY_DIR/run" "$(dirname "$sock")"
  if [[ ! -d "$MY_DATA/mysql" ]]; then
    rm -rf "$MY_DATA"
    if ! mariadb-install-db --no-defaults --datadir="$MY_DATA" --user="$user" \
      --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
      >"$MY_DIR/install-db.log" 2>&1; then
      start_failed mariadb "$MY_DIR/install-db.log"
    fi
  fi
  if ! pid_alive "$MY_PID"; then
    [[ -f "$MY_LOG" ]] && mv -f "$MY_LOG" "$MY_LOG.1"
    # --no-defaults: ignore /etc/mysql, so the distro's config cannot move ports or sockets.
    # Durability is relaxed (throwaway test data); the binlog is on (ROW) for CDC tests.
    (
      exec setsid "$mariadbd" --no-defaults --user="$user" --datadir="$MY_DATA" \
        --port="$MY_PORT" --bind-address="$HOST" --socket="$sock" --pid-file="$MY_PID" \
        --log-error="$MY_LOG" --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --max-allowed-packet=64M --local-infile=1 --max-connections=200 \
        --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 --skip-innodb-doublewrite \
        --server-id=1 --log-bin=binlog --binlog-format=ROW --binlog-row-image=FULL \
        --binlog-expire-logs-seconds=86400 \
        >>"$MY_DIR/mariadbd.out" 2>&1 </dev/null 9>&-
    ) &
    # mariadbd writes the pid file itself once running; remember the pid until then.
    echo "$!" >"$MY_PID"
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  until [[ -S "$sock" ]] && my_admin_sql -e 'select 1' >/dev/null 2>&1; do
    pid_alive "$MY_PID" || start_failed mariadb "$MY_LOG"
    ((SECONDS < deadline)) || start_failed mariadb "$MY_LOG"
    sleep 0.5
  done
  if ! my_admin_sql >>"$MY_LOG" 2>&1 <<'SQL'
CREATE USER IF NOT EXISTS 'sluice'@'%' IDENTIFIED BY 'sluice';
CREATE USER IF NOT EXISTS 'sluice'@'localhost' IDENTIFIED BY 'sluice';
CREATE USER IF NOT EXISTS 'sluice'@'127.0.0.1' IDENTIFIED BY 'sluice';
GRANT ALL PRIVILEGES ON *.* TO 'sluice'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'sluice'@'localhost' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'sluice'@'127.0.0.1' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS sluice;
SQL
  then
    start_failed mariadb "$MY_LOG"
  fi
  log "mariadb   up   $HOST:$MY_PORT"
}

my_down() {
  pid_alive "$MY_PID" || { rm -f "$MY_PID"; return 0; }
  local pid i
  pid="$(<"$MY_PID")"
  my_admin_sql -e 'SHUTDOWN' >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "services: mariadb did not stop in 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$MY_PID"
  log "mariadb   stopped"
}

# --------------------------------------------------------------- docker ----
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose -f "$ROOT/docker-compose.yml" "$@"
  else
    docker-compose -f "$ROOT/docker-compose.yml" "$@"
  fi
}

use_docker() {
  case "${SLUICE_SERVICES_MODE:-auto}" in
    local) return 1 ;;
    docker) return 0 ;;
    auto)
      command -v docker >/dev/null || return 1
      timeout 10 docker info >/dev/null 2>&1 || return 1
      docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null
      ;;
    *) die "SLUICE_SERVICES_MODE must be auto, local or docker" ;;
  esac
}

# ------------------------------------------------------------- commands ----
cmd_status() {
  local all=0 name port
  for entry in "kafka:$KAFKA_PORT" "postgres:$PG_PORT" "mariadb:$MY_PORT"; do
    name="${entry%%:*}"
    port="${entry##*:}"
    if port_open "$HOST" "$port"; then
      printf '%-9s %-5s %s\n' "$name" up "$HOST:$port"
    else
      printf '%-9s %-5s %s\n' "$name" down "$HOST:$port"
      all=1
    fi
  done
  return "$all"
}

cmd_env() {
  cat <<EOF
export SLUICE_TEST_KAFKA=$HOST:$KAFKA_PORT
export SLUICE_TEST_POSTGRES=postgres://sluice:sluice@$HOST:$PG_PORT/sluice
export SLUICE_TEST_MYSQL=mysql://sluice:sluice@$HOST:$MY_PORT/sluice
export SLUICE_KAFKA_LIBS=$(kafka_libs)
EOF
}

# Serializes up/down. fd 9 holds the lock; servers started under it get `9>&-`.
with_lock() {
  mkdir -p "$SVC"
  exec 9>"$SVC/.lock"
  flock -w 300 9 || die "another services.sh holds $(rel "$SVC")/.lock"
}

# The services named on the command line (default: all), checked.
selected() {
  local s
  (($#)) || set -- postgres mariadb kafka
  for s in "$@"; do
    case "$s" in
      kafka | postgres | mariadb) printf '%s\n' "$s" ;;
      *) die "unknown service '$s' (expected kafka, postgres or mariadb)" ;;
    esac
  done
}

cmd_up() {
  local services
  services="$(selected "$@")"
  with_lock
  if use_docker; then
    # shellcheck disable=SC2086 # word splitting of the service list is intended
    compose up -d --wait $services
    cmd_status
    return
  fi
  "$ROOT/scripts/deps.sh" services
  local t s
  t=$SECONDS
  for s in $services; do
    case "$s" in
      postgres) pg_up ;;
      mariadb) my_up ;;
      kafka) kafka_up ;;
    esac
  done
  log "services: ready in $((SECONDS - t))s"
}

cmd_down() {
  local services s
  services="$(selected "$@")"
  with_lock
  if use_docker; then
    # shellcheck disable=SC2086 # word splitting of the service list is intended
    compose stop $services
    return
  fi
  for s in $services; do
    case "$s" in
      kafka) kafka_down ;;
      mariadb) my_down ;;
      postgres) pg_down ;;
    esac
  done
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  kafka-tool)
    shift
    (($#)) || die "usage: $0 kafka-tool CLASS [ARGS...]  (e.g. org.apache.kafka.tools.TopicCommand --bootstrap-server $HOST:$KAFKA_PORT --list)"
    [[ -f "$KAFKA_DIR/tools-log4j2.properties" ]] || die "run '$0 up' first"
    kafka_tool "$@"
    ;;
  *)
    echo "usage: $0 up [SERVICE...] | down [SERVICE...] | status | env | kafka-tool CLASS [ARGS...]   (SERVICE: kafka, postgres, mariadb)" >&2
    exit 2
    ;;
esac
