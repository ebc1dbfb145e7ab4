# The few commands a newcomer needs. Each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
# The broker: $STREAMER_URL, else the local one on 5672, else a private node started for us.
BROKER  = STREAMER_URL="$$($(BIN)/python -m tests.broker url)"

.PHONY: help system-deps install demo test unit integration bench bench-smoke lint typecheck \
	clean broker-stop

help:
	@echo "make demo         stream simulated sync+publish tasks while a listener prints keys"
	@echo "make test         the whole test suite against a real RabbitMQ"
	@echo "make bench        throughput vs. other clients + publish() micro benchmarks"
	@echo "make lint         ruff + mypy"

# System packages some tests drive: headless Chromium (dashboard browser test) and Prometheus
# with promtool (metrics tests). Installed from the distribution when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v chromium >/dev/null && command -v prometheus >/dev/null \
		&& command -v promtool >/dev/null || { \
		echo "installing chromium and prometheus (Debian packages) for the tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium prometheus \
			>/dev/null; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BROKER) $(BIN)/streamer demo

test: $(STAMP) system-deps
	$(BROKER) $(BIN)/python -m pytest -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(BROKER) $(BIN)/python bench/throughput.py
	$(BROKER) $(BIN)/python -m pytest -p no:cacheprovider bench/ --benchmark-only \
		--benchmark-autosave --benchmark-storage=bench/results/.benchmarks

bench-smoke: $(STAMP)
	$(BROKER) $(BIN)/python bench/throughput.py --tasks 5 --reports 20 --repeat 1 --json /dev/null
	$(BROKER) $(BIN)/python -m pytest -p no:cacheprovider bench/ --benchmark-disable -q

lint: $(STAMP)
	$(BIN)/ruff check streamer tests bench
	$(BIN)/mypy

broker-stop: $(STAMP)
	$(BIN)/python -m tests.broker stop

clean:
	rm -rf $(VENV) build dist *.egg-info
