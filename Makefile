# The few commands a newcomer needs. Each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
# The broker: $STREAMER_URL, else the local one on 5672, else a private node started for us.
BROKER  = STREAMER_URL="$$($(BIN)/python -m tests.broker url)"

.PHONY: help install demo test unit integration bench bench-smoke lint typecheck clean broker-stop

help:
	@echo "make demo         stream simulated sync+publish tasks while a listener prints keys"
	@echo "make test         the whole test suite against a real RabbitMQ"
	@echo "make bench        throughput vs. other clients + publish() micro benchmarks"
	@echo "make lint         ruff + mypy"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BROKER) $(BIN)/streamer demo

test: $(STAMP)
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
