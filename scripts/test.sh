#!/usr/bin/env bash
# Runs the test suite against the real RabbitMQ and PostgreSQL (AMQP_URL, POSTGRES_DSN) and
# MongoDB at MONGO_URL; when nothing answers there, starts the nx-27017 stand-in for the
# duration of the run on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null; then UV=uv; else UV="python3 -m uv"; fi
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
export POSTGRES_DSN="${POSTGRES_DSN:-postgresql://postgres@127.0.0.1:5432/cqrs}"
stand_in=""
cleanup() { [ -n "$stand_in" ] && kill "$stand_in" 2>/dev/null; [ -n "${data:-}" ] && rm -rf "$data"; true; }
trap cleanup EXIT
if [ -z "${MONGO_URL:-}" ]; then
  port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  data=$(mktemp -d)
  .venv/bin/nx-27017 --host 127.0.0.1 -p "$port" --data-dir "$data" --log-file "$data/nx.log" --pid-file "$data/nx.pid" > "$data/out.log" 2>&1 &
  stand_in=$!
  export MONGO_URL="mongodb://127.0.0.1:$port"
  for _ in $(seq 1 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break; sleep 0.2; done
  echo "MongoDB stand-in (nx-27017) at $MONGO_URL"
fi
$UV run --frozen pytest "$@"
