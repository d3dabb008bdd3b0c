# Each target sets up what it needs on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SECONDS ?= 6

.PHONY: demo test bench lint ffmpeg postgresql chromium screenshot setup clean

setup: $(STAMP) ffmpeg

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's ffmpeg (5.1 on bookworm); installed only when missing.
ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || \
	  ( $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg )

demo: setup
	EZREC_DATA_DIR=$${EZREC_DATA_DIR:-$(CURDIR)/demo-data} $(BIN)/ezrec demo --seconds $(DEMO_SECONDS)

# The test session runs its own PostgreSQL cluster (initdb/pg_ctl, not the system service),
# so Debian's server binaries must be there; installed only when missing.
postgresql:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  ( $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql )

# The page tests drive Debian's Chromium with Playwright (never `playwright install`: its
# browser downloads are not used); installed only when missing.
chromium:
	@test -x /usr/bin/chromium || \
	  ( $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium )

# docs/page.png: the staff page of a box that has just recorded a booking (docs/screenshot.py).
screenshot: setup chromium
	$(BIN)/python docs/screenshot.py docs/page.png

# The test session starts its own PostgreSQL cluster and S3 (moto) server on loopback.
test: setup postgresql chromium
	$(BIN)/ruff check controller api tests bench docs/screenshot.py
	$(BIN)/python -m pytest -q -n 3

# Benchmarks print a table and write JSON under bench/results/ (see docs/performance.md).
bench: setup
	$(BIN)/python bench/fsm.py --json bench/results/fsm.json
	$(BIN)/python bench/latency.py --json bench/results/latency.json
	$(BIN)/python bench/pipeline.py --json bench/results/pipeline.json
	$(BIN)/python bench/upload.py --json bench/results/upload.json
	$(BIN)/python bench/api.py --json bench/results/api.json
	$(BIN)/python bench/page.py --json bench/results/page.json
	$(BIN)/python bench/time_to_video.py --json bench/results/time_to_video.json

lint: setup
	$(BIN)/ruff check controller api tests bench docs/screenshot.py

clean:
	rm -rf $(VENV) demo-data .pytest_cache
