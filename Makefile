# Quick start: `make demo` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo-out

WEB := runtime/web
ORT_DIST := $(WEB)/node_modules/onnxruntime-web/dist
ORT_FILES := ort.min.mjs ort-wasm-simd-threaded.jsep.mjs ort-wasm-simd-threaded.jsep.wasm ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
WEB_STAMP := $(WEB)/vendor/.installed

RUNTIME_VENV := .venv-runtime
RUNTIME_KIT := build/runtime-kit
RUNTIME_LOG := build/runtime-venv.log

.PHONY: setup test test-runtime runtime-venv runtime-tests demo clean web browser exiftool test-tools

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --no-compile -q -e '.[train,dev,serve,ray,openvino]'
	touch $(STAMP)

# onnxruntime-web and fflate (the page's zip of XMP sidecars) from npm, pinned by runtime/web/package-lock.json,
# copied where corel-web and the wheel find them.
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(WEB)/vendor
	cd $(ORT_DIST) && cp $(ORT_FILES) $(CURDIR)/$(WEB)/vendor/
	cp $(WEB)/node_modules/fflate/esm/browser.js $(WEB)/vendor/fflate.mjs
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

# A real Chromium for the browser tests: Debian's package (Playwright's own download cannot work here).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# exiftool for --write-tags xmp and its tests: Debian's package (GPL or Artistic licence, as Perl).
exiftool:
	command -v exiftool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libimage-exiftool-perl >/dev/null)

# Both of the above for make test, with one apt-get update.
test-tools:
	@missing=""; command -v chromium >/dev/null || missing="chromium"; \
	command -v exiftool >/dev/null || missing="$$missing libimage-exiftool-perl"; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

setup: $(STAMP) $(WEB_STAMP)

# Two stages, no test run twice: the full install runs every module except those marked `runtime`
# (keeping their `full` tests, which need torch); the runtime-only install runs the `runtime` ones.
# The runtime-only venv installs in the background while the first stage runs (its log follows it).
test: $(STAMP) $(WEB_STAMP) test-tools
	@mkdir -p build && rm -f $(RUNTIME_LOG).rc
	@($(MAKE) --no-print-directory runtime-venv > $(RUNTIME_LOG) 2>&1; echo $$? > $(RUNTIME_LOG).rc) &
	$(PY) -m pytest -q -p no:cacheprovider -m "not runtime or full"
	@while [ ! -f $(RUNTIME_LOG).rc ]; do sleep 2; done; cat $(RUNTIME_LOG); exit $$(cat $(RUNTIME_LOG).rc)
	$(MAKE) --no-print-directory runtime-tests

# The second stage alone: the install most users get (`pip install .`, no extras, NumPy 2) in a fresh
# venv, running the test modules marked `runtime` and the conformance kit the full install writes.
test-runtime: runtime-venv
	$(MAKE) --no-print-directory runtime-tests

runtime-venv: $(STAMP)
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install --disable-pip-version-check --no-compile -q . pytest hypothesis jsonschema

runtime-tests:
	rm -rf $(RUNTIME_KIT)
	$(BIN)/corel-export conformance $(RUNTIME_KIT)
	COREL_RUNTIME_ONLY=1 COREL_KIT=$(RUNTIME_KIT) $(RUNTIME_VENV)/bin/python -m pytest -q -p no:cacheprovider -m runtime tests

demo: $(STAMP) $(WEB_STAMP)
	$(BIN)/corel-synth $(DEMO)/data --images 600 --labels 12 --seed 0 --quiet
	$(BIN)/corel-train --data $(DEMO)/data --method attention --epochs 15 --cache-dir $(DEMO)/cache --out $(DEMO)/attention.ckpt
	$(BIN)/corel-train --data $(DEMO)/data --method ml-gcn --loss asl --epochs 15 --cache-dir $(DEMO)/cache --out $(DEMO)/ml-gcn.ckpt
	$(BIN)/corel-export $(DEMO)/attention.ckpt -o $(DEMO)/attention.bundle --force
	$(BIN)/corel-export $(DEMO)/ml-gcn.ckpt -o $(DEMO)/ml-gcn.bundle --force
	$(BIN)/corel-infer $(DEMO)/data/test.json --model $(DEMO)/attention.bundle --beam-width 3 -o $(DEMO)/attention.jsonl --overwrite --attention-maps $(DEMO)/attention-maps
	$(BIN)/corel-infer $(DEMO)/data/test.json --model $(DEMO)/ml-gcn.bundle -o $(DEMO)/ml-gcn.jsonl --overwrite
	$(BIN)/corel-eval --model $(DEMO)/attention.bundle --data $(DEMO)/data
	$(BIN)/corel-eval --model $(DEMO)/ml-gcn.bundle --data $(DEMO)/data
	# a label the bundle never saw, added to its label memory without retraining
	$(BIN)/corel-synth $(DEMO)/new-label --images 200 --labels 13 --seed 1 --quiet
	$(BIN)/corel-memory add $(DEMO)/ml-gcn.bundle --data $(DEMO)/new-label -o $(DEMO)/ml-gcn-plus.bundle --force
	$(BIN)/corel-eval --model $(DEMO)/ml-gcn-plus.bundle --data $(DEMO)/new-label
	@echo "browser: $(BIN)/corel-web --model $(DEMO)/attention.bundle  (then open http://127.0.0.1:8080/)"
	@echo "server:  $(BIN)/corel-serve --model $(DEMO)/attention.bundle  (then $(BIN)/corel-infer PHOTOS --server http://127.0.0.1:8000 --model attention)"
	@echo "outputs: checkpoints $(DEMO)/*.ckpt, bundles $(DEMO)/*.bundle (ml-gcn-plus.bundle: one label added by corel-memory), annotations $(DEMO)/*.jsonl, attention maps $(DEMO)/attention-maps/"

clean:
	rm -rf $(DEMO) .pytest_cache build $(RUNTIME_VENV)
