# One command per thing a person does. `make demo` and `make test` work on a fresh machine:
# they create .venv, install torch==2.13.0 first (a bare `torch` would pull a multi-GB CUDA
# build), then the project with its dev extras at the versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint format bench bench-quick bench-registry bench-quality bench-serve chaos chaos-quick clean

SPEED_BENCHES := train_step ablation efficiency evaluation storage time_to_accuracy

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/continual stream run streams/demo.yaml --home .continual/demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install lint
	$(BIN)/python -m pytest -q --durations=20 $(PYTEST_ARGS)

# The speed suite against PEFT and full fine-tuning (about 1.5 h on 2 cores); each prints a table
# and writes bench/results/NAME.json. docs/BENCHMARKS.md holds the figures.
bench: install
	for b in $(SPEED_BENCHES); do $(BIN)/python -m bench.$$b || exit 1; done

bench-quick: install
	for b in $(SPEED_BENCHES); do \
		$(BIN)/python -m bench.$$b --quick --out /tmp/continual-bench-$$b.json || exit 1; done

bench-registry: install
	$(BIN)/python -m bench.registry

# `continual serve` under load (about 20 min here, most of it learning its 8 tasks once).
bench-serve: install
	$(BIN)/python -m bench.serve

# Accuracy benchmarks (hours on 2 cores): prefix quality, similar-task init, routing and its
# ceiling (how far a router reading the input alone could go).
bench-quality: install
	$(BIN)/python -m bench.prefix_quality
	$(BIN)/python -m bench.similar_init
	$(BIN)/python -m bench.routing
	$(BIN)/python -m bench.routing_ceiling

# The reliability drills (docs/RELIABILITY.md): `chaos` at full size (about an hour here), one
# drill file at a time so each lands in bench/results/chaos.json as it ends; it rewrites the
# document's tables even when a drill fails (and then exits non-zero). `chaos-quick`: a few
# cases of each, also part of `make test`.
chaos: install
	rm -f bench/results/chaos.json
	rc=0; for f in tests/chaos/test_*.py; do \
		CHAOS_SCALE=full CHAOS_JSON=bench/results/chaos.json $(BIN)/python -m pytest -q $$f || rc=1; \
	done; $(BIN)/python -m bench.reliability; exit $$rc

chaos-quick: install
	rm -f /tmp/continual-chaos-quick.json
	CHAOS_JSON=/tmp/continual-chaos-quick.json $(BIN)/python -m pytest -q tests/chaos; \
		rc=$$?; $(BIN)/python -m bench.reliability --json /tmp/continual-chaos-quick.json --print; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .continual
