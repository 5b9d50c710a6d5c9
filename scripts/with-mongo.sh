#!/usr/bin/env bash
# Runs a command with MONGO_URL set: the one from the environment, or else an nx-27017
# MongoDB stand-in started for the duration of the command on a free port (data in a
# temporary directory, removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
stand_in=""; data=""
cleanup() { [ -n "$stand_in" ] && kill "$stand_in" 2>/dev/null; [ -n "$data" ] && rm -rf "$data"; true; }
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
"$@"
