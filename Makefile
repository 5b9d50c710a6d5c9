# Two commands on a fresh machine: `make demo` runs the system and shows it working,
# `make test` runs the tests. uv is installed with pip when missing.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: install up down status demo test test-unit migrate clean bench asyncapi scale chaos

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
	$(UV) sync --frozen

up: install          ## start the three services (and what they need) in the background
	scripts/stack.sh up

down:                ## stop them cleanly
	scripts/stack.sh down

status:
	scripts/stack.sh status

demo: up             ## start the stack, send a scenario, print the view, stop the stack
	$(UV) run --frozen python scripts/demo.py; rc=$$?; [ -n "$$KEEP" ] || scripts/stack.sh down; exit $$rc

test: install        ## unit, integration and end-to-end tests against the real servers
	scripts/test.sh

test-unit: install
	$(UV) run --frozen pytest tests/unit -q

asyncapi: install    ## regenerate docs/asyncapi.yaml from the contract models and topology (commit it)
	$(UV) run --frozen python -m cqrs_shared.asyncapi docs/asyncapi.yaml

migrate: install
	$(UV) run --frozen command-service migrate

clean: down
	rm -rf .run

bench: install       ## measure the system against its raw baselines (about 3 minutes on a quiet machine; BENCH_ARGS: docs/performance.md)
	scripts/with-mongo.sh $(UV) run --frozen python bench/bench.py $(BENCH_ARGS)

scale: install       ## projector at 1, 2, 4 replicas, 2 command and 1-2 query replicas, views checked by the oracle (a few minutes)
	scripts/with-mongo.sh $(UV) run --frozen python bench/scale.py $(SCALE_ARGS)

chaos: install       ## the chaos test at a larger size (CHAOS_COMMANDS, default 5000) on private servers (a few minutes)
	CHAOS_COMMANDS=$${CHAOS_COMMANDS:-5000} scripts/test.sh tests/e2e/test_chaos.py -q -s -p no:cacheprovider
