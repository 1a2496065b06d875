# Two entry points for a new machine: `make run` (the service on the demo model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_BUNDLE ?= demo/bundle

.PHONY: run test install-service install-all demo-textures demo-bundle

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

## The service alone needs no torch: a CPU install takes about a minute.
install-service: $(BIN)/python
	$(BIN)/pip install -q -e .

install-all: $(BIN)/python demo-textures
	$(BIN)/pip install -q -e '.[train,dev]'

## The demo data's photographed surfaces (Debian's ufoai-textures), where apt can install them.
demo-textures:
	bash scripts/install-textures.sh

run: install-service
	$(BIN)/inspect-svc serve --model $(DEMO_BUNDLE) --host $(HOST) --port $(PORT)

test: install-all
	bash scripts/test-services.sh
	@# pytest exits 5 when it collected nothing: a suite that ran no test is a failure.
	$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$status

## Rebuild the shipped demo bundle with our own pipeline (CPU, a few minutes).
demo-bundle: install-all
	bash scripts/build-demo-bundle.sh $(DEMO_BUNDLE)
