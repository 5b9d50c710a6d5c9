#!/usr/bin/env bash
# Start or stop the whole system locally: the three services as separate processes, plus
# the MongoDB stand-in when nothing answers at MONGO_URL. RabbitMQ and PostgreSQL are
# expected at AMQP_URL / POSTGRES_DSN; when they do not answer and Docker is available they
# are started with docker compose.
#   scripts/stack.sh up     start in the background, return once every service is ready
#   scripts/stack.sh down   stop cleanly (SIGTERM, then wait)
#   scripts/stack.sh status
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run
if command -v uv >/dev/null; then UV=uv; else UV="python3 -m uv"; fi
mkdir -p "$RUN"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
export POSTGRES_DSN="${POSTGRES_DSN:-postgresql://postgres@127.0.0.1:5432/cqrs}"
export MONGO_URL="${MONGO_URL:-mongodb://127.0.0.1:27017}"
export MONGO_DB="${MONGO_DB:-cqrs_views}"

hostport() {  # scheme://user:pw@host:port/... -> "host port"
  python3 - "$1" "$2" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}
answers() { read -r h p < <(hostport "$1" "$2"); python3 -c "import socket,sys; socket.create_connection(('$h',$p),2)" 2>/dev/null; }

wait_for() {  # url default-port name seconds
  for _ in $(seq 1 $(( $4 * 5 ))); do answers "$1" "$2" && return 0; sleep 0.2; done
  echo "$3 does not answer at $1" >&2; return 1
}

ensure_infra() {
  local missing=()
  answers "$AMQP_URL" 5672 || missing+=(rabbitmq)
  answers "$POSTGRES_DSN" 5432 || missing+=(postgres)
  if ((${#missing[@]})); then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
      echo "starting ${missing[*]} with docker compose"
      docker compose -f deploy/docker-compose.yml up -d "${missing[@]}"
      wait_for "$AMQP_URL" 5672 RabbitMQ 60; wait_for "$POSTGRES_DSN" 5432 PostgreSQL 60
    else
      echo "error: ${missing[*]} not reachable (AMQP_URL=$AMQP_URL POSTGRES_DSN=$POSTGRES_DSN) and no Docker to start them" >&2
      exit 1
    fi
  fi
  if ! answers "$MONGO_URL" 27017; then
    read -r h p < <(hostport "$MONGO_URL" 27017)
    echo "no MongoDB at $MONGO_URL: starting the nx-27017 stand-in on $h:$p"
    mkdir -p "$RUN/mongo-data"
    nohup .venv/bin/nx-27017 --host "$h" -p "$p" --data-dir "$PWD/$RUN/mongo-data" \
      --log-file "$PWD/$RUN/mongo.log" --pid-file "$PWD/$RUN/nx.pid" > "$RUN/mongo.out" 2>&1 &
    echo $! > "$RUN/mongo.pid"
    wait_for "$MONGO_URL" 27017 MongoDB 30
  fi
}

declare -A HEALTH=([command-service]=8081 [projector-service]=8082 [query-service]=8083)

start_service() {
  local name=$1
  HEALTH_PORT="${HEALTH[$name]}" nohup ".venv/bin/$name" serve > "$RUN/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
}

up() {
  $UV sync --frozen -q
  ensure_infra
  $UV run --frozen command-service migrate
  for s in command-service projector-service query-service; do
    if [ -f "$RUN/$s.pid" ] && kill -0 "$(cat "$RUN/$s.pid")" 2>/dev/null; then echo "$s already running"; else start_service "$s"; fi
  done
  for s in command-service projector-service query-service; do
    for _ in $(seq 1 150); do
      grep -q "$s ready" "$RUN/$s.log" 2>/dev/null && break
      kill -0 "$(cat "$RUN/$s.pid")" 2>/dev/null || { echo "$s exited:"; tail -20 "$RUN/$s.log"; exit 1; }
      sleep 0.2
    done
    grep -q "$s ready" "$RUN/$s.log" || { echo "$s not ready after 30 s:"; tail -20 "$RUN/$s.log"; exit 1; }
    echo "$s ready (pid $(cat "$RUN/$s.pid"), log $RUN/$s.log, health http://127.0.0.1:${HEALTH[$s]}/readyz)"
  done
}

stop_pidfile() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  for s in query-service projector-service command-service; do stop_pidfile "$RUN/$s.pid"; done
  [ -f "$RUN/nx.pid" ] && stop_pidfile "$RUN/nx.pid"
  stop_pidfile "$RUN/mongo.pid"
  echo "stack stopped"
}

status() {
  for s in command-service projector-service query-service mongo; do
    if [ -f "$RUN/$s.pid" ] && kill -0 "$(cat "$RUN/$s.pid")" 2>/dev/null; then echo "$s: running (pid $(cat "$RUN/$s.pid"))"; else echo "$s: stopped"; fi
  done
  # health, queues, dead letters, outbox backlog, projection lag (docs/operations.md)
  if [ -x .venv/bin/cqrsctl ]; then .venv/bin/cqrsctl status || true; fi
}

"${1:-up}"
