#!/usr/bin/env bash
# Runs the test suite against the real RabbitMQ and PostgreSQL (AMQP_URL, POSTGRES_DSN) and
# MongoDB at MONGO_URL, or the nx-27017 stand-in when MONGO_URL is unset.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null; then UV=uv; else UV="python3 -m uv"; fi
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
export POSTGRES_DSN="${POSTGRES_DSN:-postgresql://postgres@127.0.0.1:5432/cqrs}"
exec scripts/with-mongo.sh $UV run --frozen pytest "$@"
