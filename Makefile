# Quick start: `make demo` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo-out

.PHONY: setup test demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[train,dev]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	COREL_CACHE_DIR=$(DEMO)/cache $(BIN)/corel-synth $(DEMO)/data --images 600 --labels 12 --seed 0 --quiet
	COREL_CACHE_DIR=$(DEMO)/cache $(BIN)/corel-train --data $(DEMO)/data --method attention --epochs 15 --out $(DEMO)/attention.ckpt
	COREL_CACHE_DIR=$(DEMO)/cache $(BIN)/corel-train --data $(DEMO)/data --method ml-gcn --loss asl --epochs 15 --out $(DEMO)/ml-gcn.ckpt
	@echo "demo checkpoints: $(DEMO)/attention.ckpt $(DEMO)/ml-gcn.ckpt (synthetic data in $(DEMO)/data)"

clean:
	rm -rf $(DEMO) .pytest_cache
