# clipsearch: `make demo` sets up and runs the offline demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pinned to the wheels this project is built and tested with (see README).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup sysdeps test demo clean

# Debian packages: the emoji font the sample gallery and the bundled model's data are drawn with.
SYSDEPS := fonts-noto-color-emoji

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[cpu,dev,ocr]'
	touch $@

setup: $(VENV)/.installed sysdeps

sysdeps:
	@if command -v dpkg >/dev/null 2>&1 && ! dpkg -s $(SYSDEPS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(SYSDEPS); \
	  else sudo apt-get install -y $(SYSDEPS); fi; \
	elif ! command -v dpkg >/dev/null 2>&1; then \
	  echo "note: install the Noto Color Emoji font ($(SYSDEPS) on Debian) for the sample gallery"; \
	fi

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/clipsearch demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
