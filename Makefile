# The few commands a newcomer needs. Each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
# The broker: $STREAMER_URL, else the local one on 5672, else a private node started for us.
BROKER  = STREAMER_URL="$$($(BIN)/python -m tests.broker url)"

.PHONY: help system-deps redis install demo test unit integration bench bench-smoke lint typecheck \
	clean broker-stop

help:
	@echo "make demo         simulated sync+publish tasks, watched live in a task table"
	@echo "make test         the whole test suite against a real RabbitMQ"
	@echo "make bench        throughput vs. other clients + publish() micro benchmarks"
	@echo "make bench-receive  what dashboard/watch/listen receive and cost, vs. peers"
	@echo "make bench-history  the history's cost, and a late dashboard reading 1,000,000 reports"
	@echo "make loadtest     30 s of locust task workers at 20,000 reports/s (LOADTEST=...)"
	@echo "make capacity     locust capacity search: the highest sustained report rate"
	@echo "make capacity-types  the search per queue type (classic, quorum, stream), twice"
	@echo "make soak         10 minutes at 70% of the maximum rate: RSS and fds over time"
	@echo "make faults-long  the fault tests' long variants (100 restarts, ...)"
	@echo "make unit         the unit tests only: no network, no broker"
	@echo "make lint         ruff (lint + format check) + mypy --strict"

# System packages some tests drive: headless Chromium (dashboard browser test), Prometheus
# with promtool (metrics tests) and tmux (watch in a real terminal). Installed from the distribution when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v chromium >/dev/null && command -v prometheus >/dev/null \
		&& command -v promtool >/dev/null && command -v redis-server >/dev/null \
		&& command -v tmux >/dev/null || { \
		echo "installing chromium, prometheus, redis and tmux (Debian packages) for the tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium prometheus \
			redis-server tmux >/dev/null; }

# The RQ test needs a Redis, as RQ itself does: the one on 127.0.0.1:6379, else one started
# here (in memory only, loopback only).
redis: $(STAMP) system-deps
	@$(BIN)/python -c "import redis; redis.Redis(socket_connect_timeout=2).ping()" \
		2>/dev/null || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
		--save "" --appendonly no >/dev/null

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BROKER) $(BIN)/streamer demo

test: $(STAMP) system-deps redis
	$(BROKER) $(BIN)/python -m pytest -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m unit

bench: $(STAMP)
	$(BROKER) $(BIN)/python bench/throughput.py
	$(BROKER) $(BIN)/python -m pytest -p no:cacheprovider bench/ --benchmark-only \
		-W "ignore::pytest_benchmark.logger.PytestBenchmarkWarning" \
		--benchmark-storage=file://bench/baseline --benchmark-compare=0001 \
		--benchmark-compare-fail=median:100% --benchmark-json=bench/results/latest.json

bench-smoke: $(STAMP)
	$(BROKER) $(BIN)/python bench/throughput.py --tasks 5 --reports 20 --repeat 1 --json /dev/null
	$(BROKER) $(BIN)/python bench/receive.py --reports 2000 --drain 5000 --repeat 1 --json /dev/null
	$(BROKER) $(BIN)/python bench/history.py --reports 2000 --replay 5000 --repeat 1 --json /dev/null
	$(BROKER) $(BIN)/python -m pytest -p no:cacheprovider bench/ --benchmark-disable -q
	$(BROKER) $(BIN)/streamer loadtest --headless -u 5 --rate 1000 -t 4s \
		--only-summary --exit-code-on-error 0 --csv bench/results/smoke

# Receiving: the dashboard, watch and listen against the harness watcher, peers and a raw
# reader, attached to a full-speed publisher and draining a full queue (bench/receive.py).
.PHONY: bench-receive
bench-receive: $(STAMP)
	$(BROKER) $(BIN)/python bench/receive.py

# The history: the publisher's rate with it on vs off, and a dashboard started after
# 1,000,000 reports reading it (bench/history.py).
.PHONY: bench-history
bench-history: $(STAMP)
	$(BROKER) $(BIN)/python bench/history.py

# A 30 s run at a fixed rate, then the capacity search (docs/capacity-testing.md): locust on
# loadtest/locustfile.py, through `streamer loadtest` as a pip user runs it.
.PHONY: loadtest capacity capacity-types
LOADTEST ?= -u 50 --rate 20000 -t 30s
loadtest: $(STAMP)
	$(BROKER) $(BIN)/streamer loadtest --headless $(LOADTEST) --csv bench/results/loadtest

capacity: $(STAMP)
	$(BROKER) $(BIN)/streamer loadtest --headless -u 50 --capacity --start-rate 15000 \
		--rate-factor 1.2 --csv bench/results/capacity

# The search for each queue type (classic, quorum, stream), twice: ~15 minutes.
capacity-types: $(STAMP)
	$(BROKER) $(BIN)/python bench/capacity_types.py

# Ten minutes at 70% of the maximum rate; RSS, fds and threads must stay flat (not in CI).
.PHONY: soak faults-long
soak: $(STAMP)
	$(BROKER) $(BIN)/python bench/soak.py --json bench/results/soak.json

# The fault tests' longer variants: 100 restarts, 50,000 pool cycles, more fuzzing.
faults-long: $(STAMP)
	$(BROKER) STREAMER_FAULTS_LONG=1 $(BIN)/python -m pytest -p no:cacheprovider tests/faults --timeout 7200

lint: $(STAMP)
	$(BIN)/ruff check streamer tests bench loadtest examples
	$(BIN)/ruff format --check streamer tests bench loadtest examples
	$(BIN)/mypy

broker-stop: $(STAMP)
	$(BIN)/python -m tests.broker stop

clean:
	rm -rf $(VENV) build dist *.egg-info
