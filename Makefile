# clipsearch: `make demo` sets up and runs the offline demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pinned to the wheels this project is built and tested with (see README).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup sysdeps test demo clean

# Debian packages: the emoji font the sample gallery is drawn with, and the picture sources of the
# bundled model's training data (docs/data.md; indexer.training.sources.APT_PACKAGES lists the same):
# Symbola, GCompris' pictures, four icon themes, and libcairo2 for GCompris' SVGs. About 90 MB to
# download, 150 MB installed; --no-install-recommends keeps GCompris' program and Qt out.
SYSDEPS := fonts-noto-color-emoji fonts-symbola gcompris-qt-data oxygen-icon-theme gnome-icon-theme \
	tango-icon-theme adwaita-icon-theme libcairo2

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[cpu,dev,ocr]'
	touch $@

setup: $(VENV)/.installed sysdeps

sysdeps:
	@if command -v dpkg >/dev/null 2>&1 && ! dpkg -s $(SYSDEPS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSDEPS); \
	  else sudo apt-get install -y --no-install-recommends $(SYSDEPS); fi; \
	elif ! command -v dpkg >/dev/null 2>&1; then \
	  echo "note: install the Noto Color Emoji font and the training pictures ($(SYSDEPS) on Debian)"; \
	fi

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/clipsearch demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
