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
	$(BIN)/corel-synth $(DEMO)/data --images 600 --labels 12 --seed 0 --quiet
	$(BIN)/corel-train --data $(DEMO)/data --method attention --epochs 15 --cache-dir $(DEMO)/cache --out $(DEMO)/attention.ckpt
	$(BIN)/corel-train --data $(DEMO)/data --method ml-gcn --loss asl --epochs 15 --cache-dir $(DEMO)/cache --out $(DEMO)/ml-gcn.ckpt
	$(BIN)/corel-export $(DEMO)/attention.ckpt -o $(DEMO)/attention.bundle --force
	$(BIN)/corel-export $(DEMO)/ml-gcn.ckpt -o $(DEMO)/ml-gcn.bundle --force
	$(BIN)/corel-infer $(DEMO)/data/test.json --model $(DEMO)/attention.bundle --beam-width 3 -o $(DEMO)/attention.jsonl --overwrite --attention-maps $(DEMO)/attention-maps
	$(BIN)/corel-infer $(DEMO)/data/test.json --model $(DEMO)/ml-gcn.bundle -o $(DEMO)/ml-gcn.jsonl --overwrite
	$(BIN)/corel-eval --model $(DEMO)/attention.bundle --data $(DEMO)/data
	$(BIN)/corel-eval --model $(DEMO)/ml-gcn.bundle --data $(DEMO)/data
	@echo "outputs: checkpoints $(DEMO)/*.ckpt, bundles $(DEMO)/*.bundle, annotations $(DEMO)/*.jsonl, attention maps $(DEMO)/attention-maps/"

clean:
	rm -rf $(DEMO) .pytest_cache
